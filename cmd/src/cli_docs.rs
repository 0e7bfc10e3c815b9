//! Shell completions and man pages from a CLI definition, for both `berth` and `berthd`
//! (`completion <shell>`, `man [DIR]`): no daemon needed.

use anyhow::Context;
use std::path::Path;

/// Prints the completion script for `shell`.
pub fn completion(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Writes one man page per (sub)command into `dir`, or prints the top one.
pub fn man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            clap_mangen::generate_to(cmd, d)
                .with_context(|| format!("write man pages into {}", d.display()))?;
        }
    }
    Ok(())
}

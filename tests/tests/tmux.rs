//! `berth run -it IMAGE sh` in a real terminal (a tmux pane on a private tmux server): a
//! typed command's output appears, Ctrl-C interrupts the container's foreground process
//! (not berth), resizing the window resizes the container's terminal, and `exit N` ends
//! `berth run` with N. Skips, saying so, where tmux is not installed (scripts/setup-deps.sh
//! installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::{bin, import_as_base, oci, Daemon};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of this test's own (`-L`), killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.server)
            .args(args)
            .output()
            .unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits (60 s at most: a hang fails) until the pane shows `text` in a line of its own
    /// after the `after`th occurrence of it.
    fn wait_for(&self, text: &str, after: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if lines_of(&screen, text) > after {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear; the pane shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tmux {
    /// Whether the pane shows `text` as a line of its own more than `after` times.
    fn shows(&self, text: &str, after: usize) -> bool {
        lines_of(&self.screen(), text) > after
    }
}

/// How many lines of `screen` are `text` alone.
fn lines_of(screen: &str, text: &str) -> usize {
    screen.lines().filter(|l| l.trim_end() == text).count()
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn run_it_in_tmux_types_interrupts_resizes_and_exits() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!(
            "skipped: tmux is not installed (apt-get install tmux, or scripts/setup-deps.sh)"
        );
        return;
    }
    let d = Daemon::start().unwrap();
    let (_work, archive) = oci::busybox_archive();
    import_as_base(&d, &archive);
    let tmux = Tmux {
        server: format!("berth-test-{}", std::process::id()),
    };
    // The pane runs berth, then prints its exit status and stays for the test to read it.
    let run = format!(
        "{} --address {} run -it --rm test.local/base:latest sh; echo EXIT=$?; sleep 600",
        bin("berth").display(),
        d.socket().display()
    );
    let new = tmux.cmd(&["new-session", "-d", "-s", "t", "-x", "80", "-y", "24", &run]);
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    assert!(tmux
        .cmd(&["set-option", "-g", "status", "off"])
        .status
        .success());

    // Typed and run: the quotes keep the echoed command line from matching its output.
    tmux.keys(&["echo typed''-and-run", "Enter"]);
    tmux.wait_for("typed-and-run", 0);

    // Ctrl-C reaches the container's foreground process; berth and the shell stay.
    tmux.keys(&["sleep 600", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo after-$((40+2))", "Enter"]);
    tmux.wait_for("after-42", 0);

    // A larger window: the container's terminal follows it.
    assert!(tmux
        .cmd(&["resize-window", "-t", "t", "-x", "100", "-y", "30"])
        .status
        .success());
    // The new size travels (SIGWINCH to berth, ResizePty to the shim) while the shell reads
    // the next line: asked again until it arrives (a minute at most).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tmux.shows("30 100", 0) {
        assert!(
            Instant::now() < deadline,
            "never resized:\n{}",
            tmux.screen()
        );
        tmux.keys(&["stty size", "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
    }

    tmux.keys(&["exit 3", "Enter"]);
    tmux.wait_for("EXIT=3", 0);
}

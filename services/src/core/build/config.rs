//! The instructions that only change the config (ARG, ENV, WORKDIR, USER, STOPSIGNAL, CMD,
//! ENTRYPOINT, LABEL, EXPOSE, VOLUME).

use super::dockerfile::{self, Instruction};
use super::stage::Stage;
use crate::core::error::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) fn arg_of(
    ins: &Instruction,
    given: &BTreeMap<String, String>,
    known: &BTreeMap<String, String>,
) -> Result<(String, String)> {
    let text = dockerfile::expand(&ins.rest, known).map_err(|e| ins.error(e))?;
    let (name, default) = match text.split_once('=') {
        Some((n, d)) => (n.trim().to_string(), dockerfile::words(d)?.join(" ")),
        None => (text.trim().to_string(), String::new()),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ins.error("give NAME or NAME=default"));
    }
    let value = given.get(&name).cloned().unwrap_or(default);
    Ok((name, value))
}

/// Instructions that only change the config.
pub(super) fn metadata_step(
    ins: &Instruction,
    stage: &mut Stage,
    build_args: &BTreeMap<String, String>,
) -> Result<()> {
    let vars = stage.env();
    if !stage.config["config"].is_object() {
        stage.config["config"] = json!({});
    }
    let expanded = dockerfile::expand(&ins.rest, &vars).map_err(|e| ins.error(e))?;
    let cfg = &mut stage.config["config"];
    let command = |ins: &Instruction| match ins.json() {
        Some(a) => json!(a),
        None => json!(["/bin/sh", "-c", ins.rest]),
    };
    match ins.cmd.as_str() {
        "ARG" => {
            let (k, mut v) = arg_of(ins, build_args, &vars)?;
            if v.is_empty() && !ins.rest.contains('=') {
                v = stage.globals.get(&k).cloned().unwrap_or_default();
            }
            stage.args.insert(k, v);
        }
        "ENV" => {
            set_env(cfg, ins, &vars)?;
        }
        "WORKDIR" => {
            let current = cfg["WorkingDir"].as_str().unwrap_or("/").to_string();
            let next = if expanded.starts_with('/') {
                expanded
            } else {
                format!("{}/{expanded}", current.trim_end_matches('/'))
            };
            cfg["WorkingDir"] = json!(next);
        }
        "USER" => cfg["User"] = json!(expanded.trim()),
        "STOPSIGNAL" => cfg["StopSignal"] = json!(expanded.trim()),
        "CMD" => cfg["Cmd"] = command(ins),
        "ENTRYPOINT" => cfg["Entrypoint"] = command(ins),
        "LABEL" => {
            if !cfg["Labels"].is_object() {
                cfg["Labels"] = json!({});
            }
            for (k, v) in dockerfile::pairs(&expanded)? {
                cfg["Labels"][k] = json!(v);
            }
        }
        "EXPOSE" => {
            expose(cfg, &expanded);
        }
        "VOLUME" => {
            add_volumes(cfg, ins, &expanded)?;
        }
        other => return Err(ins.error(format!("{other} is not handled here"))),
    }
    stage.history(ins, true);
    Ok(())
}

/// ENV: each pair replaces the variable's earlier value.
fn set_env(cfg: &mut Value, ins: &Instruction, vars: &BTreeMap<String, String>) -> Result<()> {
    let mut env: Vec<Value> = cfg["Env"].as_array().cloned().unwrap_or_default();
    for (k, v) in dockerfile::pairs(&ins.rest)? {
        let v = dockerfile::expand(&v, vars).map_err(|e| ins.error(e))?;
        env.retain(|e| {
            e.as_str().and_then(|s| s.split_once('=')).map(|(ek, _)| ek) != Some(k.as_str())
        });
        env.push(json!(format!("{k}={v}")));
    }
    cfg["Env"] = json!(env);
    Ok(())
}

/// EXPOSE: each port, TCP unless it names its protocol.
fn expose(cfg: &mut Value, expanded: &str) {
    if !cfg["ExposedPorts"].is_object() {
        cfg["ExposedPorts"] = json!({});
    }
    for p in expanded.split_whitespace() {
        let port = if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        };
        cfg["ExposedPorts"][port] = json!({});
    }
}

/// VOLUME: absolute paths, as a JSON array or words.
fn add_volumes(cfg: &mut Value, ins: &Instruction, expanded: &str) -> Result<()> {
    if !cfg["Volumes"].is_object() {
        cfg["Volumes"] = json!({});
    }
    let paths = match ins.json() {
        Some(a) => a,
        None => expanded.split_whitespace().map(str::to_string).collect(),
    };
    for p in paths {
        if !p.starts_with('/') {
            return Err(ins.error(format!("{p:?} must be an absolute path")));
        }
        cfg["Volumes"][p] = json!({});
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(stage: &mut Stage, dockerfile: &str, build_args: &[(&str, &str)]) -> Result<()> {
        let args: BTreeMap<String, String> = build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let parsed = dockerfile::parse(&format!("FROM scratch\n{dockerfile}"))?;
        for ins in parsed.iter().skip(1) {
            metadata_step(ins, stage, &args)?;
        }
        Ok(())
    }

    #[test]
    fn env_workdir_user_and_history() {
        let mut s = Stage::new();
        run(
            &mut s,
            "ENV A=1 B=two\nENV A=${B}-x\nWORKDIR /app\nWORKDIR sub\nUSER ${A}\n",
            &[],
        )
        .unwrap();
        let cfg = &s.config["config"];
        assert_eq!(cfg["Env"], json!(["B=two", "A=two-x"]));
        assert_eq!(cfg["WorkingDir"], json!("/app/sub"));
        assert_eq!(cfg["User"], json!("two-x"));
        assert_eq!(s.history.len(), 5);
        assert!(s.history.iter().all(|h| h["empty_layer"] == json!(true)));
    }

    #[test]
    fn args_take_build_args_then_defaults_then_globals() {
        let mut s = Stage::new();
        s.globals.insert("G".into(), "global".into());
        run(
            &mut s,
            "ARG A=default\nARG B=default\nARG G\n",
            &[("B", "given")],
        )
        .unwrap();
        assert_eq!(s.args["A"], "default");
        assert_eq!(s.args["B"], "given");
        assert_eq!(s.args["G"], "global");
        assert!(run(&mut s, "ARG =x\n", &[]).is_err());
    }

    #[test]
    fn commands_ports_labels_volumes() {
        let mut s = Stage::new();
        run(
            &mut s,
            "CMD [\"a\", \"b\"]\nENTRYPOINT exec me\nEXPOSE 80 53/udp\nLABEL k=v\nVOLUME /data\nSTOPSIGNAL SIGINT\n",
            &[],
        )
        .unwrap();
        let cfg = &s.config["config"];
        assert_eq!(cfg["Cmd"], json!(["a", "b"]));
        assert_eq!(cfg["Entrypoint"], json!(["/bin/sh", "-c", "exec me"]));
        assert_eq!(cfg["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(cfg["Labels"], json!({"k": "v"}));
        assert_eq!(cfg["Volumes"], json!({"/data": {}}));
        assert_eq!(cfg["StopSignal"], json!("SIGINT"));
        let err = run(&mut s, "VOLUME relative\n", &[]).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }
}

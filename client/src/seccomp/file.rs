//! Seccomp profiles read from files: the OCI runtime-spec's `LinuxSeccomp` JSON (what runc
//! reads, and what the kubelet's Localhost profiles are), or Docker's format, whose entries
//! may hold only for some capabilities, architectures or kernels (`includes`, `excludes`)
//! and whose `archMap` lists the ABIs of each architecture.

use super::{kernel_release, Error, Platform, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Reads and checks the profile at `path`, so that a mistake fails here, naming the file,
/// instead of when a runtime starts the container.
pub fn load(path: &Path) -> Result<Value> {
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| Error::invalid(format!("cannot load seccomp profile {shown}: {e}")))?;
    let profile: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("seccomp profile {shown} is not valid JSON: {e}")))?;
    check(&profile).map_err(|why| Error::invalid(format!("seccomp profile {shown}: {why}")))?;
    Ok(profile)
}

fn check(profile: &Value) -> std::result::Result<(), String> {
    let is_action = |v: &Value| v.as_str().is_some_and(|a| a.starts_with("SCMP_ACT_"));
    if !profile.is_object() {
        return Err("it is not a JSON object".into());
    }
    if !is_action(&profile["defaultAction"]) {
        return Err("defaultAction is missing or is not an SCMP_ACT_ action".into());
    }
    if !profile["architectures"].is_null() && !profile["archMap"].is_null() {
        return Err("it has both architectures and archMap".into());
    }
    let rules = match &profile["syscalls"] {
        Value::Null => return Ok(()),
        Value::Array(rules) => rules,
        _ => return Err("syscalls is not a list".into()),
    };
    for (i, rule) in rules.iter().enumerate() {
        let named = rule["names"]
            .as_array()
            .is_some_and(|n| !n.is_empty() && n.iter().all(Value::is_string))
            || rule["name"].is_string();
        if !named {
            return Err(format!("syscalls[{i}] names no system call"));
        }
        if !is_action(&rule["action"]) {
            return Err(format!("syscalls[{i}] has no SCMP_ACT_ action"));
        }
        for side in ["includes", "excludes"] {
            let min = &rule[side]["minKernel"];
            if !min.is_null() && min.as_str().and_then(kernel_release).is_none() {
                return Err(format!(
                    "syscalls[{i}].{side}.minKernel is not like \"4.8\""
                ));
            }
        }
    }
    Ok(())
}

/// The profile as runtimes read it (OCI) for a container holding `caps` on `platform`:
/// Docker's conditional entries kept or dropped, its `archMap` turned into this platform's
/// architectures. An OCI profile comes back as it was.
pub fn resolve<S: AsRef<str>>(profile: &Value, caps: &[S], platform: Platform) -> Value {
    let Some(fields) = profile.as_object() else {
        return profile.clone();
    };
    let mut out: Map<String, Value> = fields.clone();
    if let Some(map) = out.remove("archMap") {
        let native = platform.arch.abis().first().copied();
        let entry = map.as_array().and_then(|entries| {
            entries
                .iter()
                .find(|e| native.is_some() && e["architecture"].as_str() == native)
        });
        if let Some(entry) = entry {
            let mut arches = vec![entry["architecture"].clone()];
            arches.extend(
                entry["subArchitectures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            out.insert("architectures".into(), Value::Array(arches));
        }
    }
    if let Some(Value::Array(rules)) = out.remove("syscalls") {
        let kept = rules
            .iter()
            .filter(|r| applies(r, caps, platform))
            .map(oci_rule)
            .collect();
        out.insert("syscalls".into(), Value::Array(kept));
    }
    Value::Object(out)
}

/// Whether a Docker-format entry holds for the container (an OCI entry always does): every
/// `includes` condition met, no `excludes` condition met.
fn applies<S: AsRef<str>>(rule: &Value, caps: &[S], platform: Platform) -> bool {
    let holds = |cap: &Value| caps.iter().any(|c| Some(c.as_ref()) == cap.as_str());
    let arch_is = |a: &Value| a.as_str() == Some(platform.arch.go_name());
    let kernel_from = |min: &Value| {
        min.as_str()
            .and_then(kernel_release)
            .map(|m| platform.kernel >= m)
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (inc, exc) = (&rule["includes"], &rule["excludes"]);
    let excluded = list(&exc["arches"]).iter().any(arch_is)
        || list(&exc["caps"]).iter().any(holds)
        || kernel_from(&exc["minKernel"]) == Some(true);
    let included = {
        let arches = list(&inc["arches"]);
        (arches.is_empty() || arches.iter().any(arch_is))
            && list(&inc["caps"]).iter().all(holds)
            && kernel_from(&inc["minKernel"]) != Some(false)
    };
    included && !excluded
}

/// An entry without Docker's fields: `name` becomes `names`; conditions and comments go.
fn oci_rule(rule: &Value) -> Value {
    let mut r = rule.as_object().cloned().unwrap_or_default();
    for docker_only in ["includes", "excludes", "comment"] {
        r.remove(docker_only);
    }
    if let Some(name) = r.remove("name") {
        r.entry("names").or_insert_with(|| Value::Array(vec![name]));
    }
    Value::Object(r)
}

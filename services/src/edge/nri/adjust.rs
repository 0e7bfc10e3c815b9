//! Plugins' adjustments applied to a container's OCI spec (as JSON): annotations, mounts,
//! environment, args, OCI hooks, rlimits, devices, cgroup resources, OOM score, cgroups
//! path, namespaces and sysctls. A key, destination or path starting with '-' removes that
//! item. Two plugins may not set the same item; an adjustment berth cannot honour (CDI
//! devices, seccomp policy, RDT, scheduler, I/O priority, memory policy, net devices) fails
//! the create rather than being dropped silently.

use crate::core::error::{Error, Result};
use berth_proto::nri as api;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Which plugin set which item, to refuse a second one setting it.
#[derive(Default)]
struct Owners(HashMap<String, String>);

impl Owners {
    fn claim(&mut self, item: String, plugin: &str) -> Result<()> {
        match self.0.get(&item) {
            Some(other) if other != plugin => Err(Error::invalid(format!(
                "NRI plugins {other} and {plugin} both adjust {item}"
            ))),
            _ => {
                self.0.insert(item, plugin.to_string());
                Ok(())
            }
        }
    }
}

fn removal(key: &str) -> Option<&str> {
    key.strip_prefix('-')
}

/// `v[key]` as an object, made one if it is not.
fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    match v[key].as_object_mut() {
        Some(m) => m,
        None => unreachable!("set to an object above"),
    }
}

/// `v[key]` as an array, made one if it is not.
fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v[key].is_array() {
        v[key] = json!([]);
    }
    match v[key].as_array_mut() {
        Some(a) => a,
        None => unreachable!("set to an array above"),
    }
}

/// Applies each plugin's adjustment, in call order, to `spec`.
pub fn apply_all(
    spec: &mut Value,
    adjustments: &[(String, api::ContainerAdjustment)],
) -> Result<()> {
    let mut owners = Owners::default();
    for (plugin, a) in adjustments {
        apply(spec, a, plugin, &mut owners)?;
    }
    Ok(())
}

fn apply(
    spec: &mut Value,
    a: &api::ContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
) -> Result<()> {
    if !a.cdi_devices.is_empty() {
        return Err(Error::invalid(format!(
            "NRI plugin {plugin} asks for CDI devices, which berth does not resolve"
        )));
    }
    for (k, v) in &a.annotations {
        let key = removal(k).unwrap_or(k);
        owners.claim(format!("annotation {key}"), plugin)?;
        let annotations = obj(spec, "annotations");
        match removal(k) {
            Some(k) => annotations.remove(k),
            None => annotations.insert(k.clone(), json!(v)),
        };
    }
    for m in &a.mounts {
        let dest = removal(&m.destination)
            .unwrap_or(&m.destination)
            .to_string();
        owners.claim(format!("mount {dest}"), plugin)?;
        let mounts = arr(spec, "mounts");
        mounts.retain(|x| x["destination"].as_str() != Some(dest.as_str()));
        if removal(&m.destination).is_none() {
            mounts.push(json!({
                "destination": m.destination,
                "type": m.r#type,
                "source": m.source,
                "options": m.options,
            }));
        }
    }
    let process = &mut spec["process"];
    for kv in &a.env {
        let key = removal(&kv.key).unwrap_or(&kv.key).to_string();
        owners.claim(format!("env {key}"), plugin)?;
        let env = arr(process, "env");
        let prefix = format!("{key}=");
        env.retain(|e| {
            e.as_str()
                .is_none_or(|s| !s.starts_with(&prefix) && s != key)
        });
        if removal(&kv.key).is_none() {
            env.push(json!(format!("{key}={}", kv.value)));
        }
    }
    if !a.args.is_empty() {
        owners.claim("args".into(), plugin)?;
        process["args"] = json!(a.args);
    }
    for r in &a.rlimits {
        owners.claim(format!("rlimit {}", r.r#type), plugin)?;
        let rlimits = arr(process, "rlimits");
        rlimits.retain(|x| x["type"].as_str() != Some(r.r#type.as_str()));
        rlimits.push(json!({"type": r.r#type, "hard": r.hard, "soft": r.soft}));
    }
    if let Some(h) = &a.hooks {
        add_hooks(spec, h);
    }
    if let Some(l) = &a.linux {
        apply_linux(spec, l, plugin, owners)?;
    }
    Ok(())
}

fn add_hooks(spec: &mut Value, h: &api::Hooks) {
    let hooks = [
        ("prestart", &h.prestart),
        ("createRuntime", &h.create_runtime),
        ("createContainer", &h.create_container),
        ("startContainer", &h.start_container),
        ("poststart", &h.poststart),
        ("poststop", &h.poststop),
    ];
    for (name, list) in hooks {
        for hook in list {
            let mut j = json!({"path": hook.path});
            if !hook.args.is_empty() {
                j["args"] = json!(hook.args);
            }
            if !hook.env.is_empty() {
                j["env"] = json!(hook.env);
            }
            if let Some(t) = &hook.timeout {
                j["timeout"] = json!(t.value);
            }
            arr(obj_value(spec, "hooks"), name).push(j);
        }
    }
}

fn obj_value<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    obj(v, key);
    &mut v[key]
}

fn apply_linux(
    spec: &mut Value,
    l: &api::LinuxContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
) -> Result<()> {
    let unsupported = [
        ("a seccomp policy", l.seccomp_policy.is_some()),
        ("an I/O priority", l.io_priority.is_some()),
        ("a scheduler policy", l.scheduler.is_some()),
        ("RDT", l.rdt.is_some()),
        ("a memory policy", l.memory_policy.is_some()),
        ("network devices", !l.net_devices.is_empty()),
    ];
    if let Some((what, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(Error::invalid(format!(
            "NRI plugin {plugin} adjusts {what}, which berth does not apply"
        )));
    }
    if let Some(o) = &l.oom_score_adj {
        owners.claim("oom score".into(), plugin)?;
        spec["process"]["oomScoreAdj"] = json!(o.value);
    }
    let linux = obj_value(spec, "linux");
    if !l.cgroups_path.is_empty() {
        owners.claim("cgroups path".into(), plugin)?;
        linux["cgroupsPath"] = json!(l.cgroups_path);
    }
    for (k, v) in &l.sysctl {
        let key = removal(k).unwrap_or(k);
        owners.claim(format!("sysctl {key}"), plugin)?;
        let sysctl = obj(linux, "sysctl");
        match removal(k) {
            Some(k) => sysctl.remove(k),
            None => sysctl.insert(k.clone(), json!(v)),
        };
    }
    for ns in &l.namespaces {
        let kind = removal(&ns.r#type).unwrap_or(&ns.r#type).to_string();
        owners.claim(format!("namespace {kind}"), plugin)?;
        let list = arr(linux, "namespaces");
        list.retain(|x| x["type"].as_str() != Some(kind.as_str()));
        if removal(&ns.r#type).is_none() {
            let mut j = json!({"type": kind});
            if !ns.path.is_empty() {
                j["path"] = json!(ns.path);
            }
            list.push(j);
        }
    }
    for d in &l.devices {
        let path = removal(&d.path).unwrap_or(&d.path).to_string();
        owners.claim(format!("device {path}"), plugin)?;
        let list = arr(linux, "devices");
        list.retain(|x| x["path"].as_str() != Some(path.as_str()));
        if removal(&d.path).is_some() {
            continue;
        }
        let mut j = json!({"path": path, "type": d.r#type, "major": d.major, "minor": d.minor});
        if let Some(m) = &d.file_mode {
            j["fileMode"] = json!(m.value);
        }
        if let Some(u) = &d.uid {
            j["uid"] = json!(u.value);
        }
        if let Some(g) = &d.gid {
            j["gid"] = json!(g.value);
        }
        list.push(j);
        arr(obj_value(linux, "resources"), "devices").push(json!({
            "allow": true, "type": d.r#type, "major": d.major, "minor": d.minor, "access": "rwm",
        }));
    }
    if let Some(r) = &l.resources {
        let claimed = merge_resources(obj_value(linux, "resources"), r);
        for field in claimed {
            owners.claim(format!("resource {field}"), plugin)?;
        }
    }
    Ok(())
}

/// Sets what `r` sets in an OCI `linux.resources` object; answers the fields it set.
pub fn merge_resources(res: &mut Value, r: &api::LinuxResources) -> Vec<&'static str> {
    let mut set = vec![];
    let mut put = |v: &mut Value, section: &str, key: &'static str, val: Value| {
        obj(v, section).insert(key.into(), val);
        set.push(key);
    };
    if let Some(m) = &r.memory {
        let fields: [(&'static str, Option<Value>); 7] = [
            ("limit", m.limit.as_ref().map(|x| json!(x.value))),
            (
                "reservation",
                m.reservation.as_ref().map(|x| json!(x.value)),
            ),
            ("swap", m.swap.as_ref().map(|x| json!(x.value))),
            ("kernel", m.kernel.as_ref().map(|x| json!(x.value))),
            ("kernelTCP", m.kernel_tcp.as_ref().map(|x| json!(x.value))),
            ("swappiness", m.swappiness.as_ref().map(|x| json!(x.value))),
            (
                "disableOOMKiller",
                m.disable_oom_killer.as_ref().map(|x| json!(x.value)),
            ),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                put(res, "memory", k, v);
            }
        }
    }
    if let Some(c) = &r.cpu {
        let fields: [(&'static str, Option<Value>); 7] = [
            ("shares", c.shares.as_ref().map(|x| json!(x.value))),
            ("quota", c.quota.as_ref().map(|x| json!(x.value))),
            ("period", c.period.as_ref().map(|x| json!(x.value))),
            (
                "realtimeRuntime",
                c.realtime_runtime.as_ref().map(|x| json!(x.value)),
            ),
            (
                "realtimePeriod",
                c.realtime_period.as_ref().map(|x| json!(x.value)),
            ),
            ("cpus", (!c.cpus.is_empty()).then(|| json!(c.cpus))),
            ("mems", (!c.mems.is_empty()).then(|| json!(c.mems))),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                put(res, "cpu", k, v);
            }
        }
    }
    if let Some(p) = &r.pids {
        put(res, "pids", "limit", json!(p.limit));
    }
    if !r.hugepage_limits.is_empty() {
        res["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
        set.push("hugepageLimits");
    }
    for (k, v) in &r.unified {
        obj(res, "unified").insert(k.clone(), json!(v));
        set.push("unified");
    }
    for d in &r.devices {
        let mut j = json!({"allow": d.allow, "type": d.r#type, "access": d.access});
        if let Some(m) = &d.major {
            j["major"] = json!(m.value);
        }
        if let Some(m) = &d.minor {
            j["minor"] = json!(m.value);
        }
        arr(res, "devices").push(j);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({
            "process": {"args": ["sh"], "env": ["PATH=/bin", "GONE=1"]},
            "annotations": {"a": "1"},
            "mounts": [{"destination": "/data", "type": "bind", "source": "/x"}],
            "linux": {"resources": {"memory": {"limit": 1}}},
        })
    }

    #[test]
    fn env_annotations_mounts_and_limits_change_and_go() {
        let a = api::ContainerAdjustment {
            annotations: [("b".into(), "2".into()), ("-a".into(), String::new())].into(),
            env: vec![
                api::KeyValue {
                    key: "NEW".into(),
                    value: "yes".into(),
                },
                api::KeyValue {
                    key: "-GONE".into(),
                    value: String::new(),
                },
            ],
            mounts: vec![api::Mount {
                destination: "-/data".into(),
                ..Default::default()
            }],
            linux: Some(api::LinuxContainerAdjustment {
                resources: Some(api::LinuxResources {
                    memory: Some(api::LinuxMemory {
                        limit: Some(api::OptionalInt64 { value: 64 << 20 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                oom_score_adj: Some(api::OptionalInt { value: 500 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut s = spec();
        apply_all(&mut s, &[("10-p".into(), a)]).unwrap();
        assert_eq!(s["process"]["env"], json!(["PATH=/bin", "NEW=yes"]));
        assert_eq!(s["annotations"], json!({"b": "2"}));
        assert_eq!(s["mounts"], json!([]));
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], json!(64 << 20));
        assert_eq!(s["process"]["oomScoreAdj"], json!(500));
    }

    #[test]
    fn two_plugins_setting_one_variable_is_refused() {
        let a = |v: &str| api::ContainerAdjustment {
            env: vec![api::KeyValue {
                key: "X".into(),
                value: v.into(),
            }],
            ..Default::default()
        };
        let mut s = spec();
        let both = [("10-a".to_string(), a("1")), ("20-b".to_string(), a("2"))];
        assert!(apply_all(&mut s, &both).is_err());
    }

    #[test]
    fn what_berth_cannot_apply_is_refused() {
        let a = api::ContainerAdjustment {
            cdi_devices: vec![api::CdiDevice {
                name: "vendor.com/gpu=0".into(),
            }],
            ..Default::default()
        };
        assert!(apply_all(&mut spec(), &[("10-a".into(), a)]).is_err());
    }
}

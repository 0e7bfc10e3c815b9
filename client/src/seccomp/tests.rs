use super::*;
use crate::spec::DEFAULT_CAPS;

const LINUX_6: Platform = Platform {
    arch: Arch::X86_64,
    kernel: (6, 8),
};
const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS);
const EPERM: Verdict = Verdict::Errno(libc::EPERM);

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Allow,
    Errno(i32),
}

fn outcome(action: &Value, errno: &Value) -> Verdict {
    match action.as_str() {
        Some("SCMP_ACT_ALLOW") => Verdict::Allow,
        Some("SCMP_ACT_ERRNO") => Verdict::Errno(errno.as_i64().unwrap_or(1) as i32),
        other => panic!("unexpected action {other:?}"),
    }
}

fn arg_matches(cmp: &Value, args: &[u64]) -> bool {
    let index = cmp["index"].as_u64().unwrap() as usize;
    let arg = args.get(index).copied().unwrap_or(0);
    let value = cmp["value"].as_u64().unwrap();
    let value_two = cmp["valueTwo"].as_u64().unwrap_or(0);
    match cmp["op"].as_str().unwrap() {
        "SCMP_CMP_EQ" => arg == value,
        "SCMP_CMP_NE" => arg != value,
        "SCMP_CMP_MASKED_EQ" => arg & value == value_two,
        op => panic!("unexpected op {op}"),
    }
}

/// What the filter answers `name(args)` on the native ABI. Every rule that matches must
/// agree: the profile never relies on the order a runtime puts overlapping rules in.
fn verdict(profile: &Value, name: &str, args: &[u64]) -> Verdict {
    let matching: Vec<Verdict> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
        .filter(|r| {
            r["args"]
                .as_array()
                .is_none_or(|a| a.iter().all(|c| arg_matches(c, args)))
        })
        .map(|r| outcome(&r["action"], &r["errnoRet"]))
        .collect();
    let mut outcomes: Vec<Verdict> = vec![];
    for o in matching {
        if !outcomes.contains(&o) {
            outcomes.push(o);
        }
    }
    assert!(
        outcomes.len() <= 1,
        "{name}{args:?}: rules disagree: {outcomes:?}"
    );
    outcomes
        .pop()
        .unwrap_or_else(|| outcome(&profile["defaultAction"], &profile["defaultErrnoRet"]))
}

fn default_caps() -> Vec<String> {
    DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
}

#[test]
fn runtime_default_answers_as_the_reference() {
    let p = render(&default_caps(), LINUX_6);
    let ns = |f: i32| f as u64 | libc::SIGCHLD as u64;
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    let table: &[(&str, &[u64], Verdict)] = &[
        ("read", &[], Verdict::Allow),
        ("futex_wake", &[], Verdict::Allow),
        ("name_to_handle_at", &[], Verdict::Allow),
        ("ptrace", &[], Verdict::Allow),
        ("chroot", &[], Verdict::Allow),
        ("arch_prctl", &[], Verdict::Allow),
        // glibc falls back to clone on ENOSYS only; clone checks the flags clone3 hides.
        ("clone3", &[], ENOSYS),
        ("clone", &[libc::SIGCHLD as u64], Verdict::Allow),
        ("clone", &[thread], Verdict::Allow),
        ("clone", &[ns(libc::CLONE_NEWUSER)], EPERM),
        (
            "clone",
            &[ns(libc::CLONE_NEWNET | libc::CLONE_NEWPID)],
            EPERM,
        ),
        ("clone", &[ns(libc::CLONE_NEWCGROUP)], EPERM),
        ("personality", &[0], Verdict::Allow),
        ("personality", &[0x8], Verdict::Allow),
        ("personality", &[0xffff_ffff], Verdict::Allow),
        ("personality", &[0x0040000], ENOSYS), // ADDR_NO_RANDOMIZE
        ("personality", &[0x0400000], ENOSYS), // READ_IMPLIES_EXEC
        ("socket", &[libc::AF_INET as u64], Verdict::Allow),
        ("socket", &[libc::AF_UNIX as u64], Verdict::Allow),
        ("socket", &[libc::AF_VSOCK as u64], EPERM),
        ("io_uring_setup", &[], EPERM),
        ("io_uring_enter", &[], EPERM),
        ("pidfd_getfd", &[], EPERM),
        ("set_mempolicy_home_node", &[], EPERM),
        ("mount", &[], EPERM),
        ("unshare", &[], EPERM),
        ("setns", &[], EPERM),
        ("keyctl", &[], EPERM),
        ("bpf", &[], EPERM),
        ("reboot", &[], EPERM),
        ("init_module", &[], EPERM),
        ("settimeofday", &[], EPERM),
        ("syslog", &[], EPERM),
        ("open_by_handle_at", &[], EPERM),
        // Calls the reference never reviewed, or newer than it: unknown, so ENOSYS.
        ("listmount", &[], ENOSYS),
        ("statmount", &[], ENOSYS),
        ("open_tree_attr", &[], ENOSYS),
        ("lsm_list_modules", &[], ENOSYS),
        ("no_such_call", &[], ENOSYS),
        ("set_tls", &[], ENOSYS),
    ];
    for (name, args, expected) in table {
        assert_eq!(&verdict(&p, name, args), expected, "{name}{args:?}");
    }
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(p["defaultErrnoRet"], 38);
    assert_eq!(
        p["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
}

#[test]
fn capabilities_allow_their_calls() {
    let table: &[(&str, &str, &[u64])] = &[
        ("CAP_SYS_ADMIN", "mount", &[]),
        ("CAP_SYS_ADMIN", "unshare", &[]),
        ("CAP_SYS_ADMIN", "clone3", &[]),
        ("CAP_SYS_ADMIN", "clone", &[libc::CLONE_NEWUSER as u64]),
        ("CAP_SYS_ADMIN", "bpf", &[]),
        ("CAP_SYS_PTRACE", "pidfd_getfd", &[]),
        ("CAP_SYS_PTRACE", "kcmp", &[]),
        ("CAP_SYS_BOOT", "reboot", &[]),
        ("CAP_SYS_MODULE", "finit_module", &[]),
        ("CAP_SYS_RAWIO", "iopl", &[]),
        ("CAP_SYS_TIME", "clock_settime", &[]),
        ("CAP_SYSLOG", "syslog", &[]),
        ("CAP_SYS_NICE", "set_mempolicy_home_node", &[]),
        ("CAP_SYS_PACCT", "acct", &[]),
        ("CAP_BPF", "bpf", &[]),
        ("CAP_PERFMON", "perf_event_open", &[]),
        ("CAP_DAC_READ_SEARCH", "open_by_handle_at", &[]),
        ("CAP_SYS_TTY_CONFIG", "vhangup", &[]),
    ];
    for (cap, name, args) in table {
        let without = render(&default_caps(), LINUX_6);
        let refused = if *name == "clone3" { ENOSYS } else { EPERM };
        assert_eq!(
            verdict(&without, name, args),
            refused,
            "{name} without {cap}"
        );
        let mut caps = default_caps();
        caps.push(cap.to_string());
        let with = render(&caps, LINUX_6);
        assert_eq!(
            verdict(&with, name, args),
            Verdict::Allow,
            "{name} with {cap}"
        );
    }
    // A capability opens its own calls only; none opens what the reference never allows.
    let syslog = render(&["CAP_SYSLOG"], LINUX_6);
    assert_eq!(verdict(&syslog, "mount", &[]), EPERM);
    let every: Vec<&str> = BY_CAPABILITY.iter().map(|(c, _)| *c).collect();
    let all = render(&every, LINUX_6);
    for name in [
        "keyctl",
        "io_uring_setup",
        "kexec_load",
        "userfaultfd",
        "swapon",
    ] {
        assert_eq!(verdict(&all, name, &[]), EPERM, "{name}");
    }
    assert_eq!(verdict(&all, "listmount", &[]), ENOSYS);
    // Without CAP_SYS_CHROOT (a CRI container can drop it), chroot is refused.
    assert_eq!(verdict(&render::<&str>(&[], LINUX_6), "chroot", &[]), EPERM);
}

#[test]
fn platform_picks_abis_and_kernel_gated_calls() {
    let arm = Platform {
        arch: Arch::Aarch64,
        kernel: (6, 1),
    };
    let p = render(&default_caps(), arm);
    assert_eq!(
        p["architectures"],
        json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    );
    assert_eq!(verdict(&p, "set_tls", &[]), Verdict::Allow);
    assert_eq!(verdict(&p, "arch_prctl", &[]), ENOSYS);
    let old = Platform {
        arch: Arch::X86_64,
        kernel: (4, 4),
    };
    assert_eq!(verdict(&render(&default_caps(), old), "ptrace", &[]), EPERM);
    assert_eq!(kernel_release("6.1.0-13-amd64"), Some((6, 1)));
    assert_eq!(kernel_release("4.8"), Some((4, 8)));
    assert_eq!(kernel_release("x"), None);
    assert!(Platform::host().kernel >= (3, 0));
}

#[test]
fn no_call_is_in_two_rules_that_disagree() {
    for caps in [vec![], default_caps(), vec!["CAP_SYS_ADMIN".into()]] {
        let p = render(&caps, LINUX_6);
        for rule in p["syscalls"].as_array().unwrap() {
            for name in rule["names"].as_array().unwrap() {
                let name = name.as_str().unwrap();
                for args in [&[][..], &[libc::AF_VSOCK as u64], &[u64::MAX]] {
                    verdict(&p, name, args);
                }
            }
        }
    }
}

#[test]
fn profiles_choose_the_filter() {
    let caps = default_caps();
    assert_eq!(Profile::Unconfined.render(&caps), None);
    let rd = Profile::RuntimeDefault.render(&caps).unwrap();
    assert_eq!(rd["defaultErrnoRet"], 38);
    let oci = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]});
    assert_eq!(Profile::Custom(oci.clone()).render(&caps), Some(oci));
}

#[test]
fn files_are_checked_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    let load_text = |text: &str| {
        std::fs::write(&p, text).unwrap();
        load(&p)
    };
    assert!(load(&dir.path().join("missing.json")).is_err());
    assert!(load_text(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).is_ok());
    for bad in [
        "[]",
        "{",
        r#"{"defaultAction":"ALLOW"}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":{}}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"]}]}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"new"}}]}"#,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"archMap":[]}"#,
    ] {
        let e = load_text(bad).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{bad}");
        assert!(e.to_string().contains("p.json"), "{e}");
    }
}

#[test]
fn docker_profiles_are_resolved_for_the_container() {
    let docker = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "everyone"},
            {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["kcmp"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.0"}}
        ]
    });
    let plain = resolve(&docker, &default_caps(), LINUX_6);
    assert_eq!(
        plain["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    assert!(plain.get("archMap").is_none());
    let names: Vec<&Value> = plain["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["names"])
        .collect();
    assert_eq!(
        names,
        [
            &json!(["read", "write"]),
            &json!(["getpid"]),
            &json!(["clone3"]),
            &json!(["arch_prctl"]),
            &json!(["ptrace"])
        ]
    );
    for r in plain["syscalls"].as_array().unwrap() {
        for docker_only in ["comment", "includes", "excludes", "name"] {
            assert!(r.get(docker_only).is_none(), "{r}");
        }
    }
    assert_eq!(verdict(&plain, "clone3", &[]), ENOSYS);
    let admin = resolve(&docker, &["CAP_SYS_ADMIN"], LINUX_6);
    assert_eq!(verdict(&admin, "mount", &[]), Verdict::Allow);
    assert_eq!(verdict(&admin, "clone3", &[]), EPERM);
    // An OCI profile is what the runtime reads already.
    let oci = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]});
    assert_eq!(resolve(&oci, &default_caps(), LINUX_6), oci);
}

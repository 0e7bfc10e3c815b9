//! CRI containers: created from the full ContainerConfig in a pod's namespaces, their output
//! in the kubelet's log format, their exit (code, reason, times) recorded when it happens.

mod create;
pub(super) mod exec;
mod exit;
mod list;
mod output;
mod remove;
mod start;
mod status;
mod stop;
mod update;

use super::logs::{self, mkfifo, LogFile};
use super::spec;
use super::{ext_proto, init_ref, Container, ContainerMeta, Cri, Sandbox, CONFIG_EXT};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::containers::{AnyValue, ContainerRecord};
use crate::core::metadata::Labels;
use crate::core::runtime::{CreateTask, Stdio};
use berth_proto::cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Signal numbers of the CRI's Signal enum.
fn signal_number(s: i32) -> Option<u32> {
    use cri::Signal as S;
    Some(match S::try_from(s).ok()? {
        S::RuntimeDefault => return None,
        S::Sigabrt | S::Sigiot => libc::SIGABRT,
        S::Sigalrm => libc::SIGALRM,
        S::Sigbus => libc::SIGBUS,
        S::Sigchld | S::Sigcld => libc::SIGCHLD,
        S::Sigcont => libc::SIGCONT,
        S::Sigfpe => libc::SIGFPE,
        S::Sighup => libc::SIGHUP,
        S::Sigill => libc::SIGILL,
        S::Sigint => libc::SIGINT,
        S::Sigio | S::Sigpoll => libc::SIGIO,
        S::Sigkill => libc::SIGKILL,
        S::Sigpipe => libc::SIGPIPE,
        S::Sigprof => libc::SIGPROF,
        S::Sigpwr => libc::SIGPWR,
        S::Sigquit => libc::SIGQUIT,
        S::Sigsegv => libc::SIGSEGV,
        S::Sigstkflt => libc::SIGSTKFLT,
        S::Sigstop => libc::SIGSTOP,
        S::Sigsys => libc::SIGSYS,
        S::Sigterm => libc::SIGTERM,
        S::Sigtrap => libc::SIGTRAP,
        S::Sigtstp => libc::SIGTSTP,
        S::Sigttin => libc::SIGTTIN,
        S::Sigttou => libc::SIGTTOU,
        S::Sigurg => libc::SIGURG,
        S::Sigusr1 => libc::SIGUSR1,
        S::Sigusr2 => libc::SIGUSR2,
        S::Sigvtalrm => libc::SIGVTALRM,
        S::Sigwinch => libc::SIGWINCH,
        S::Sigxcpu => libc::SIGXCPU,
        S::Sigxfsz => libc::SIGXFSZ,
        other => {
            let n = other as i32;
            if (35..=50).contains(&n) {
                libc::SIGRTMIN() + (n - 35)
            } else {
                libc::SIGRTMAX() - (65 - n)
            }
        }
    } as u32)
}

fn signal_by_name(name: &str) -> Option<u32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n).to_string();
    if let Ok(v) = n.parse::<u32>() {
        return Some(v);
    }
    let n = n.replace('+', "PLUS").replace('-', "MINUS");
    signal_number(cri::Signal::from_str_name(&format!("SIG{n}"))? as i32)
}

/// The signal StopContainer sends (KEP-4960's ContainerStatus.stop_signal): the config's,
/// else the image's StopSignal, else SIGTERM.
pub(in crate::edge::cri) fn effective_stop_signal(c: &Container) -> i32 {
    if c.config.stop_signal != cri::Signal::RuntimeDefault as i32 {
        return c.config.stop_signal;
    }
    let term = cri::Signal::Sigterm as i32;
    let Some(n) = signal_by_name(&c.meta.stop_signal) else {
        return term;
    };
    (1..=65)
        .find(|&v| signal_number(v) == Some(n))
        .unwrap_or(term)
}

impl Cri {
    /// Tells GetContainerEvents subscribers about `c`.
    fn event(&self, c: &Container, kind: cri::ContainerEventType) {
        self.pod_state_event(&c.id, &c.meta.sandbox_id, kind);
    }

    /// Tells GetContainerEvents subscribers about a pod's own (its sandbox's) step.
    pub(in crate::edge::cri) fn sandbox_event(&self, s: &Sandbox, kind: cri::ContainerEventType) {
        self.pod_state_event(&s.id, &s.id, kind);
    }

    /// An event as the evented PLEG (KEP-3386) takes it: the pod's status and that of
    /// every container still in the pod (a deleted one is not), as ListContainers would
    /// answer, so the kubelet needs no relist to act on it.
    fn pod_state_event(&self, id: &str, sandbox_id: &str, kind: cri::ContainerEventType) {
        let sandbox = self.sandbox(sandbox_id).ok();
        let mut members = self.members(sandbox_id);
        members.sort_by_key(|c| c.meta.created_at);
        let ev = cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::core::metadata::now(),
            pod_sandbox_status: sandbox.as_ref().map(|s| self.sandbox_status(s)),
            containers_statuses: members.iter().map(|c| self.container_status(c)).collect(),
        };
        self.notify(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map() {
        assert_eq!(
            signal_number(cri::Signal::Sigterm as i32),
            Some(libc::SIGTERM as u32)
        );
        assert_eq!(signal_number(cri::Signal::RuntimeDefault as i32), None);
        assert_eq!(
            signal_number(cri::Signal::Sigrtmin as i32),
            Some(libc::SIGRTMIN() as u32)
        );
        assert_eq!(
            signal_number(cri::Signal::Sigrtmax as i32),
            Some(libc::SIGRTMAX() as u32)
        );
        assert_eq!(signal_by_name("SIGQUIT"), Some(libc::SIGQUIT as u32));
        assert_eq!(signal_by_name("9"), Some(9));
        assert_eq!(signal_by_name("NOPE"), None);
        assert_eq!(signal_by_name("rtmin+1"), Some(libc::SIGRTMIN() as u32 + 1));
        assert_eq!(signal_by_name("SIGPWR"), Some(libc::SIGPWR as u32));
        let mut c = Container {
            id: "c".into(),
            config: Default::default(),
            meta: Default::default(),
        };
        assert_eq!(effective_stop_signal(&c), cri::Signal::Sigterm as i32);
        c.meta.stop_signal = "3".into();
        assert_eq!(effective_stop_signal(&c), cri::Signal::Sigquit as i32);
        c.config.stop_signal = cri::Signal::Sigusr1 as i32;
        assert_eq!(effective_stop_signal(&c), cri::Signal::Sigusr1 as i32);
    }
}

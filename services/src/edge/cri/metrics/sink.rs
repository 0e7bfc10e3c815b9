//! Where samples are made: each names a metric of the descriptor table, which gives its
//! kind, and carries the base labels of its pod or container plus its own extra ones.

use super::descriptors::{self, Kind, BASE};
use berth_proto::cri::v1 as cri;

pub(super) struct Sink {
    base: [String; BASE.len()],
    at: i64,
    pub out: Vec<cri::Metric>,
}

impl Sink {
    /// Samples labelled `base` (pod, namespace, container, id, image), taken at `at`.
    pub fn new(base: [String; BASE.len()], at: i64) -> Sink {
        Sink {
            base,
            at,
            out: Vec::new(),
        }
    }

    pub fn put(&mut self, name: &'static str, value: u64) {
        self.put_with(name, &[], value)
    }

    /// A sample with extra label values, in the order of its descriptor's extra keys. A
    /// name not in the table, or the wrong number of values, is a bug: it is logged and the
    /// sample left out, as a kubelet would reject it.
    pub fn put_with(&mut self, name: &'static str, extra: &[&str], value: u64) {
        let Some(d) = descriptors::find(name) else {
            tracing::error!(name, "a metric sample outside the descriptor table");
            return;
        };
        if d.extra.arity() != BASE.len() + extra.len() {
            tracing::error!(name, "a metric sample with the wrong number of labels");
            return;
        }
        let metric_type = match d.kind {
            Kind::Counter => cri::MetricType::Counter,
            Kind::Gauge => cri::MetricType::Gauge,
        };
        self.out.push(cri::Metric {
            name: name.into(),
            timestamp: self.at,
            metric_type: metric_type as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra.iter().map(|v| v.to_string()))
                .collect(),
            value: Some(cri::UInt64Value { value }),
        });
    }

    #[cfg(test)]
    pub fn for_test() -> Sink {
        Sink::new(Default::default(), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_take_kind_and_labels_from_the_table_and_strays_are_dropped() {
        let mut s = Sink::new(["p", "ns", "c", "id", "img"].map(String::from), 42);
        s.put("container_threads", 3);
        s.put_with("container_fs_usage_bytes", &["/dev/vda"], 9);
        s.put("container_fs_usage_bytes", 9); // a device label missing
        s.put("no_such_metric", 1);
        assert_eq!(s.out.len(), 2);
        assert_eq!(s.out[0].metric_type, cri::MetricType::Gauge as i32);
        assert_eq!(s.out[0].label_values, ["p", "ns", "c", "id", "img"]);
        assert_eq!(s.out[1].label_values.len(), 6);
        assert_eq!(s.out[1].timestamp, 42);
    }
}

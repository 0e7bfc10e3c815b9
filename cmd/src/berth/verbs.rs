//! The verbs the object groups share (content, images, snapshots, networks, volumes): a
//! listing as a table, ids or JSON; `inspect` as one JSON array; `rm` one by one; `label`
//! setting and removing exactly the labels given. Each group says how to call its service
//! and what an object looks like; the plumbing and the printing live here.

use crate::output::{label_mask, labels, parse_labels, ListFlags, Table};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use tokio_stream::StreamExt;

/// Prints a listing: `items` as a table under `header`, their ids with -q, or JSON with
/// --format json. `show` gives an item's cells (its id first) and its JSON form.
pub fn list<T>(
    header: &[&'static str],
    items: impl IntoIterator<Item = T>,
    flags: ListFlags,
    show: impl Fn(T) -> (Vec<String>, Value),
) -> anyhow::Result<()> {
    let mut t = Table::new(header);
    for item in items {
        let (cells, json) = show(item);
        t.row(cells, json);
    }
    t.print(flags)?;
    Ok(())
}

/// Every item of a listing the daemon streams in batches (content, snapshots).
pub async fn collect<B, T>(
    mut stream: tonic::Streaming<B>,
    items: impl Fn(B) -> Vec<T>,
) -> anyhow::Result<Vec<T>> {
    let mut out = vec![];
    while let Some(batch) = stream.next().await {
        out.extend(items(batch?));
    }
    Ok(out)
}

/// Prints a JSON document as `inspect` does: pretty, on its own.
pub fn print_json(doc: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(doc)?);
    Ok(())
}

/// `inspect A B ...`: each fetched by `get` in turn (the first failure ends it), printed
/// together as one JSON array.
pub async fn inspect<F, Fut>(names: Vec<String>, mut get: F) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let mut out = vec![];
    for name in names {
        out.push(get(name).await?);
    }
    print_json(&out)
}

/// `rm A B ...`: each removed by `remove` in turn, its name printed once it is gone; the
/// first failure ends it.
pub async fn remove<F, Fut>(names: Vec<String>, mut remove: F) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for name in names {
        remove(name.clone()).await?;
        println!("{name}");
    }
    Ok(())
}

/// `label ID k=v k2=`: `update` sends the labels with the mask that sets (k=v) or removes
/// (k=) exactly those, and answers with the labels the object has now, which are printed.
pub async fn label<F, Fut>(args: &[String], update: F) -> anyhow::Result<()>
where
    F: FnOnce(HashMap<String, String>, prost_types::FieldMask) -> Fut,
    Fut: Future<Output = anyhow::Result<HashMap<String, String>>>,
{
    let wanted = parse_labels(args)?;
    let mask = label_mask(&wanted);
    let now = update(wanted, mask).await?;
    println!("{}", labels(&now));
    Ok(())
}

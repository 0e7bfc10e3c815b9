//! How `berth check` and `berthd check` print an audit: one line a finding, then a summary.

/// One finding as printed.
pub struct Line<'a> {
    pub corrupt: bool,
    pub what: &'a str,
    pub repaired: bool,
}

/// Prints the findings and the summary; returns whether anything was corrupt.
pub fn print<'a>(
    findings: impl IntoIterator<Item = Line<'a>>,
    blobs: u64,
    records: u64,
    snapshots: u64,
) -> bool {
    let (mut corrupt, mut n) = (false, 0);
    for f in findings {
        corrupt |= f.corrupt;
        n += 1;
        let kind = if f.corrupt { "CORRUPT " } else { "leftover" };
        let fixed = if f.repaired { " (repaired)" } else { "" };
        println!("{kind} {}{fixed}", f.what);
    }
    println!(
        "checked {blobs} blobs, {records} records, {snapshots} snapshots: {n} findings, {}",
        if corrupt {
            "corruption found"
        } else {
            "no corruption"
        }
    );
    corrupt
}

//! `redfour list`: every lock held in the namespace (and foreign keys where locks are kept),
//! as an aligned table for a terminal or one JSON object per line (`--json`).

use std::io::Write;
use std::time::Duration;

use redfour::{Client, Listing, ListingKind};
use serde::Serialize;

use crate::exit::{self, Failure};
use crate::status_line::{human, printable, who};

/// Lists the locks on stdout; exit status 0, also when nothing is held.
pub async fn list(client: &Client, json: bool) -> Result<u8, Failure> {
    let listings = client
        .list()
        .await
        .map_err(|e| Failure::from_lib(&e, "list the locks", client.address()))?;
    let mut text = Vec::new();
    if json {
        for listing in &listings {
            serde_json::to_writer(&mut text, &ListingJson::of(listing))
                .map_err(|e| Failure::new(exit::IO, format!("cannot encode the list: {e}")))?;
            text.push(b'\n');
        }
    } else {
        let rows: Vec<Row> = listings.iter().map(Row::of).collect();
        text = table(&rows).into_bytes();
    }
    write_out(&text)?;
    Ok(exit::SUCCESS)
}

/// Writes the listing to stdout. A reader that went away (`redfour list | head`) is no
/// failure: it had what it wanted.
fn write_out(text: &[u8]) -> Result<(), Failure> {
    if crate::commands::stdout_was_closed() {
        return Err(Failure::new(
            exit::IO,
            "cannot write the list: stdout is closed (`>&-`; to discard it, use `>/dev/null`)",
        ));
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            exit::IO,
            format!("cannot write the list to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// One line of `--json`.
#[derive(Serialize)]
struct ListingJson<'a> {
    id: &'a str,
    kind: &'static str,
    index: Option<i64>,
    ttl: Option<u64>,
    held_for_ms: Option<u64>,
    holder: Option<HolderJson<'a>>,
    waiters: Option<u64>,
}

#[derive(Serialize)]
struct HolderJson<'a> {
    host: Option<&'a str>,
    pid: Option<u32>,
    description: Option<&'a str>,
}

impl<'a> ListingJson<'a> {
    fn of(listing: &'a Listing) -> ListingJson<'a> {
        ListingJson {
            id: &listing.id,
            kind: listing.kind.as_str(),
            index: listing.index,
            ttl: listing.ttl.map(millis),
            held_for_ms: listing.held_for.map(millis),
            holder: listing.holder.as_ref().map(|h| HolderJson {
                host: h.host.as_deref(),
                pid: h.pid,
                description: h.description.as_deref(),
            }),
            waiters: listing.waiters,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One row of the table, each cell as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    cells: [String; 7],
}

/// The table's columns, and whether each is aligned right (numbers).
const COLUMNS: [(&str, bool); 7] = [
    ("ID", false),
    ("KIND", false),
    ("INDEX", true),
    ("TTL", true),
    ("HELD FOR", true),
    ("WAITERS", true),
    ("HOLDER", false),
];

impl Row {
    /// The row of a listing: times human-readable, `-` for what does not apply.
    pub fn of(listing: &Listing) -> Row {
        let dash = || "-".to_owned();
        let holder = match (listing.kind, &listing.holder) {
            (ListingKind::Lock, Some(h)) => who(h.host.as_deref(), h.pid, h.description.as_deref()),
            (ListingKind::Lock, None) => "not recorded (Node redfour?)".to_owned(),
            _ => listing.foreign.clone().unwrap_or_else(dash),
        };
        Row {
            cells: [
                printable(&listing.id),
                listing.kind.as_str().to_owned(),
                listing.index.map_or_else(dash, |i| i.to_string()),
                listing.ttl.map_or_else(dash, human),
                listing.held_for.map_or_else(dash, human),
                listing.waiters.map_or_else(dash, |w| w.to_string()),
                holder,
            ],
        }
    }
}

/// The header and the rows, in aligned columns two spaces apart; the last column (the
/// holder) is not padded.
pub fn table(rows: &[Row]) -> String {
    let header = Row {
        cells: COLUMNS.map(|(name, _)| name.to_owned()),
    };
    let mut widths = [0; COLUMNS.len()];
    for row in std::iter::once(&header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(&row.cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.cells.iter().enumerate() {
            let last = i + 1 == COLUMNS.len();
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            if COLUMNS[i].1 {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if !last {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: [&str; 7]) -> Row {
        Row {
            cells: cells.map(str::to_owned),
        }
    }

    #[test]
    fn columns_are_aligned() {
        let rows = [
            row([
                "job",
                "lock",
                "1718000000000123",
                "29.1s",
                "900ms",
                "2",
                "box:4242 \"nightly\"",
            ]),
            row([
                "legacy-report",
                "lock",
                "42",
                "4.2s",
                "-",
                "0",
                "not recorded (Node redfour?)",
            ]),
            row(["odd", "foreign", "-", "-", "-", "-", "a string, not a hash"]),
        ];
        let expected = "\
ID             KIND                INDEX    TTL  HELD FOR  WAITERS  HOLDER
job            lock     1718000000000123  29.1s     900ms        2  box:4242 \"nightly\"
legacy-report  lock                   42   4.2s         -        0  not recorded (Node redfour?)
odd            foreign                 -      -         -        -  a string, not a hash
";
        assert_eq!(table(&rows), expected);
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(
            table(&[]),
            "ID  KIND  INDEX  TTL  HELD FOR  WAITERS  HOLDER\n"
        );
    }
}

//! A small self-contained HTML report of a bench run: the table as printed,
//! and one bar chart per row comparing the systems (inline SVG, no
//! scripts, nothing fetched), so it opens anywhere and can be attached to
//! an issue.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// One chart: a bar per system for one measured row.
pub struct Chart {
    pub title: String,
    /// (system, value); a missing value has no bar.
    pub bars: Vec<(String, Option<f64>)>,
    /// Whether a higher value is the better one (said under the chart).
    pub higher_is_better: bool,
}

pub struct Report {
    pub title: String,
    /// Lines said before the table (setup, command).
    pub notes: Vec<String>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub charts: Vec<Chart>,
}

/// A table: its header and its rows, each a cell per column.
pub type Table = (Vec<String>, Vec<Vec<String>>);

/// `a / b` with two decimals (a zero `b` counts as tiny, not as an error).
pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b.max(1e-9))
}

/// Prints a table with its columns aligned, the first to the left.
pub fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let w = widths.get(c).copied().unwrap_or(0);
            if c == 0 {
                s.push_str(&format!("{cell:<w$}"));
            } else {
                s.push_str(&format!("  {cell:>w$}"));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header);
    for r in rows {
        line(r);
    }
}

/// Tables one after the other in one HTML table, each introduced by a
/// row naming it.
pub fn stacked(tables: &[(&str, &Table)]) -> Vec<Vec<String>> {
    let width = tables.iter().map(|(_, t)| t.0.len()).max().unwrap_or(0);
    let mut rows = Vec::new();
    for (title, (header, body)) in tables {
        let mut t = vec![format!("— {title} —")];
        t.resize(width, String::new());
        rows.push(t);
        for r in std::iter::once(header).chain(body) {
            let mut r = r.clone();
            r.resize(width, String::new());
            rows.push(r);
        }
    }
    rows
}

const COLORS: [&str; 2] = ["#c0392b", "#2c6fbb"];
const WIDTH: f64 = 280.0;
const BAR_HEIGHT: f64 = 22.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn chart_svg(c: &Chart) -> String {
    let max = c
        .bars
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let label_w = 70.0;
    let height = BAR_HEIGHT * c.bars.len() as f64 + 8.0;
    let mut svg = format!(
        "<svg width=\"{w}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">",
        w = WIDTH + label_w + 90.0
    );
    for (i, (name, value)) in c.bars.iter().enumerate() {
        let y = 4.0 + BAR_HEIGHT * i as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\">{}</text>",
            escape(name),
            ty = y + 15.0
        );
        if let Some(v) = value {
            let w = (v / max * WIDTH).max(1.0);
            let _ = write!(
                svg,
                "<rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{}\"/><text x=\"{tx:.1}\" y=\"{ty}\">{}</text>",
                COLORS[i % COLORS.len()],
                format_value(*v),
                h = BAR_HEIGHT - 6.0,
                tx = label_w + w + 4.0,
                ty = y + 13.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A figure with a precision that suits its size.
pub fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
             body{{font-family:sans-serif;margin:2em;color:#222}}\
             table{{border-collapse:collapse}}td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}}\
             td:first-child,th:first-child{{text-align:left}}\
             .charts{{display:flex;flex-wrap:wrap;gap:1.5em;margin-top:1.5em}}\
             .chart h3{{font-size:13px;margin:0 0 4px}}.chart p{{font-size:11px;color:#666;margin:2px 0}}\
             </style></head><body><h1>{t}</h1>",
            t = escape(&self.title)
        );
        for n in &self.notes {
            let _ = write!(h, "<p>{}</p>", escape(n));
        }
        h.push_str("<table><tr>");
        for c in &self.header {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr>");
        for r in &self.rows {
            h.push_str("<tr>");
            for c in r {
                let _ = write!(h, "<td>{}</td>", escape(c));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table><div class=\"charts\">");
        for c in &self.charts {
            let _ = write!(
                h,
                "<div class=\"chart\"><h3>{}</h3>{}<p>{}</p></div>",
                escape(&c.title),
                chart_svg(c),
                if c.higher_is_better {
                    "higher is better"
                } else {
                    "lower is better"
                }
            );
        }
        h.push_str("</div></body></html>\n");
        h
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.html()).with_context(|| format!("write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Chart, Report};

    #[test]
    fn a_report_escapes_text_and_draws_one_bar_per_value() {
        let r = Report {
            title: "a <b>".into(),
            notes: vec![],
            header: vec!["row".into()],
            rows: vec![vec!["x & y".into()]],
            charts: vec![Chart {
                title: "events/s".into(),
                bars: vec![("ferrite".into(), Some(2.0)), ("etcd".into(), None)],
                higher_is_better: true,
            }],
        };
        let h = r.html();
        assert!(h.contains("a &lt;b&gt;"));
        assert!(h.contains("x &amp; y"));
        assert_eq!(h.matches("<rect").count(), 1);
    }
}

//! Charts as SVG made on the server: a metric over steps, a sweep's metric per run with its
//! best so far, a parameter against the metric. Series differ in shape (dots, a solid line,
//! a dashed line), not only in colour, and each chart says in words what it draws.

use std::fmt::Write;

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Line,
    /// A dashed step line (a running best).
    Dashed,
    Dots,
}

pub struct Series {
    pub label: String,
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 520.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;
/// Most points a line keeps (a long run's metric is thinned, its last point kept).
const MAX_LINE: usize = 600;

/// An SVG chart of `series`, titled, with labelled axes. Text in it is escaped.
pub fn svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let all = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut n = 0usize;
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
        n += 1;
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="16" class="title">{}</text>"#,
        esc(title)
    );
    if n == 0 {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" class="none">no values yet</text></svg>"#,
            W / 2.0 - 40.0,
            H / 2.0
        );
        return out;
    }
    if (x1 - x0).abs() < f64::EPSILON {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if (y1 - y0).abs() < f64::EPSILON {
        let pad = (y0.abs() * 0.1).max(1e-9);
        y0 -= pad;
        y1 += pad;
    }
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
    // Axes with their ends and middle labelled.
    let _ = write!(
        out,
        r#"<g class="axes"><line x1="{LEFT}" y1="{}" x2="{}" y2="{}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}"/>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    // Steps and run numbers are whole: their ticks are too.
    let whole_x = series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|(x, _)| x.fract() == 0.0);
    for t in [0.0, 0.5, 1.0] {
        let yv = y0 + t * (y1 - y0);
        let mut xv = x0 + t * (x1 - x0);
        if whole_x {
            xv = xv.round();
        }
        let anchor = match t {
            0.0 => "start",
            1.0 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" class="tick" text-anchor="end">{}</text><text x="{}" y="{}" class="tick" text-anchor="{anchor}">{}</text>"#,
            LEFT - 4.0,
            py(yv) + 4.0,
            num(yv),
            px(xv),
            H - BOTTOM + 14.0,
            num(xv)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" class="label" text-anchor="middle">{}</text><text x="12" y="{}" class="label" transform="rotate(-90 12 {})" text-anchor="middle">{}</text></g>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        esc(x_label),
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let _ = write!(
            out,
            r#"<g class="series s{k}" data-label="{}" data-points="{}">"#,
            esc(&s.label),
            pts.len()
        );
        match s.mark {
            Mark::Dots => {
                for (x, y) in &pts {
                    let _ = write!(
                        out,
                        r#"<circle class="pt" cx="{:.1}" cy="{:.1}" r="4"><title>{}: {} at {}</title></circle>"#,
                        px(*x),
                        py(*y),
                        esc(&s.label),
                        num(*y),
                        num(*x)
                    );
                }
            }
            Mark::Line | Mark::Dashed => {
                let stride = pts.len().div_ceil(MAX_LINE).max(1);
                let mut path = String::new();
                let mut last: Option<(f64, f64)> = None;
                for (i, (x, y)) in pts.iter().enumerate() {
                    if i % stride != 0 && i != pts.len() - 1 {
                        continue;
                    }
                    let (sx, sy) = (px(*x), py(*y));
                    match last {
                        None => {
                            let _ = write!(path, "M{sx:.1},{sy:.1}");
                        }
                        // A running best holds its value until the next run beats it.
                        Some((_, ly)) if s.mark == Mark::Dashed => {
                            let _ = write!(path, " L{sx:.1},{ly:.1} L{sx:.1},{sy:.1}");
                        }
                        Some(_) => {
                            let _ = write!(path, " L{sx:.1},{sy:.1}");
                        }
                    }
                    last = Some((sx, sy));
                }
                let dash = if s.mark == Mark::Dashed {
                    r#" stroke-dasharray="6 4""#
                } else {
                    ""
                };
                let _ = write!(out, r#"<path class="line" d="{path}"{dash}/>"#);
            }
        }
        out.push_str("</g>");
    }
    // The legend, in words and in the marks' own shapes.
    let mut lx = LEFT + 180.0;
    for (k, s) in series.iter().enumerate() {
        let sample = match s.mark {
            Mark::Dots => format!(r#"<circle class="key" cx="{}" cy="12" r="4"/>"#, lx),
            Mark::Line => format!(
                r#"<path class="key" d="M{},12 L{},12"/>"#,
                lx - 6.0,
                lx + 10.0
            ),
            Mark::Dashed => format!(
                r#"<path class="key" stroke-dasharray="6 4" d="M{},12 L{},12"/>"#,
                lx - 6.0,
                lx + 14.0
            ),
        };
        let _ = write!(
            out,
            r#"<g class="legend s{k}">{sample}<text x="{}" y="16">{}</text></g>"#,
            lx + 18.0,
            esc(&s.label)
        );
        lx += 40.0 + 7.0 * s.label.chars().count() as f64;
    }
    out.push_str("</svg>");
    out
}

/// A number short enough for a tick.
fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Text made safe inside SVG markup and attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_dot_per_point_and_escapes_its_text() {
        let s = svg(
            "loss <b>",
            "step",
            "loss",
            &[Series {
                label: "x\"y".into(),
                mark: Mark::Dots,
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN)],
            }],
        );
        assert_eq!(s.matches("<circle class=\"pt\" cx").count(), 2);
        assert!(!s.contains("<b>"));
        assert!(s.contains("x&quot;y"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        assert!(svg("t", "x", "y", &[]).contains("no values yet"));
    }
}

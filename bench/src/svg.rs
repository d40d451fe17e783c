//! The results plot, written by hand as SVG: two panels side by side,
//! throughput (operations per second) and p99 latency (milliseconds)
//! against the number of concurrent clients, one line per system.
//!
//! The x axis places the measured client counts at even spacing (the sweep
//! is roughly geometric, 1, 16, 64, 256) and labels each one; the y axes
//! start at zero so that ratios read true.

use std::collections::BTreeSet;
use std::fmt::Write;

/// One system's measurements.
#[derive(Clone, Debug)]
pub struct PlotSeries {
    /// Legend label.
    pub name: String,
    /// CSS colour of the line and markers.
    pub color: String,
    /// (clients, operations per second, p99 latency in ms), any order.
    pub points: Vec<(u64, f64, f64)>,
}

const PANEL_WIDTH: f64 = 420.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 50.0;
const PANEL_GAP: f64 = 90.0;
const Y_TICKS: u32 = 5;

/// Which measurement a panel shows.
#[derive(Clone, Copy)]
enum Panel {
    Throughput,
    LatencyP99,
}

impl Panel {
    fn value(self, point: &(u64, f64, f64)) -> f64 {
        match self {
            Panel::Throughput => point.1,
            Panel::LatencyP99 => point.2,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Panel::Throughput => "Throughput (operations/s, higher is better)",
            Panel::LatencyP99 => "p99 latency (ms, lower is better)",
        }
    }
}

/// The whole SVG document: `title` on top, throughput on the left, p99
/// on the right, a shared legend below.
pub fn throughput_and_p99_svg(title: &str, series: &[PlotSeries]) -> String {
    let width = MARGIN_LEFT * 2.0 + PANEL_WIDTH * 2.0 + PANEL_GAP;
    let height = MARGIN_TOP + PANEL_HEIGHT + MARGIN_BOTTOM + 40.0;
    let clients: Vec<u64> = series
        .iter()
        .flat_map(|one| one.points.iter().map(|point| point.0))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    )
    .unwrap();
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    )
    .unwrap();
    let panels = [
        (Panel::Throughput, MARGIN_LEFT),
        (
            Panel::LatencyP99,
            MARGIN_LEFT * 2.0 + PANEL_WIDTH + PANEL_GAP - 40.0,
        ),
    ];
    for (panel, left) in panels {
        write_panel(&mut svg, panel, left, &clients, series);
    }
    write_legend(&mut svg, series, height - 22.0);
    svg.push_str("</svg>\n");
    svg
}

fn write_panel(svg: &mut String, panel: Panel, left: f64, clients: &[u64], series: &[PlotSeries]) {
    let top = MARGIN_TOP;
    let bottom = top + PANEL_HEIGHT;
    let value_max = series
        .iter()
        .flat_map(|one| one.points.iter().map(|point| panel.value(point)))
        .fold(0.0_f64, f64::max);
    let axis_max = nice_ceiling(value_max);
    let x_of = |client_count: u64| {
        let position = clients.iter().position(|c| *c == client_count).unwrap_or(0);
        let slots = clients.len().max(1) as f64;
        left + PANEL_WIDTH * (position as f64 + 0.5) / slots
    };
    let y_of = |value: f64| bottom - PANEL_HEIGHT * (value / axis_max);
    writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        left + PANEL_WIDTH / 2.0,
        top - 10.0,
        panel.title()
    )
    .unwrap();
    writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    )
    .unwrap();
    for tick in 0..=Y_TICKS {
        let value = axis_max * f64::from(tick) / f64::from(Y_TICKS);
        let y = y_of(value);
        writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + PANEL_WIDTH,
            left - 6.0,
            y + 4.0,
            format_tick(value)
        )
        .unwrap();
    }
    for client_count in clients {
        writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{client_count}</text>"#,
            x_of(*client_count),
            bottom + 18.0
        )
        .unwrap();
    }
    writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrent clients</text>"#,
        left + PANEL_WIDTH / 2.0,
        bottom + 38.0
    )
    .unwrap();
    for one in series {
        let mut points = one.points.clone();
        points.sort_by_key(|point| point.0);
        let coordinates: Vec<String> = points
            .iter()
            .map(|point| format!("{:.1},{:.1}", x_of(point.0), y_of(panel.value(point))))
            .collect();
        writeln!(
            svg,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            escape(&one.name),
            escape(&one.color),
            coordinates.join(" ")
        )
        .unwrap();
        for point in &points {
            writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{}: {} clients, {}</title></circle>"#,
                x_of(point.0),
                y_of(panel.value(point)),
                escape(&one.color),
                escape(&one.name),
                point.0,
                format_tick(panel.value(point))
            )
            .unwrap();
        }
    }
}

fn write_legend(svg: &mut String, series: &[PlotSeries], y: f64) {
    for (position, one) in series.iter().enumerate() {
        let x = MARGIN_LEFT + 160.0 * position as f64;
        writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            escape(&one.color),
            x + 30.0,
            y + 4.0,
            escape(&one.name)
        )
        .unwrap();
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value`
/// (1 for an empty plot), so that tick labels are round numbers.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_tick(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_systems() -> Vec<PlotSeries> {
        vec![
            PlotSeries {
                name: "raftgres".into(),
                color: "#1f77b4".into(),
                points: vec![(16, 4000.0, 9.5), (1, 300.0, 4.0), (256, 20000.0, 30.0)],
            },
            PlotSeries {
                name: "etcd <3.4>".into(),
                color: "#d62728".into(),
                points: vec![(1, 250.0, 5.0), (16, 3000.0, 8.0), (256, 9000.0, 60.0)],
            },
        ]
    }

    #[test]
    fn the_plot_is_well_formed_svg_with_a_line_per_system_and_panel() {
        let svg = throughput_and_p99_svg("raftgres & etcd", &two_systems());
        let document = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let lines: Vec<_> = root
            .descendants()
            .filter(|node| node.has_tag_name("polyline"))
            .collect();
        assert_eq!(lines.len(), 4, "two systems times two panels");
        for line in &lines {
            assert_eq!(line.attribute("points").unwrap().split(' ').count(), 3);
        }
        let names: BTreeSet<&str> = lines
            .iter()
            .map(|line| line.attribute("data-series").unwrap())
            .collect();
        assert_eq!(names, BTreeSet::from(["raftgres", "etcd <3.4>"]));
        let markers = root
            .descendants()
            .filter(|node| node.has_tag_name("circle"));
        assert_eq!(markers.count(), 12);
        let text: String = root
            .descendants()
            .filter(|node| node.is_text())
            .filter_map(|node| node.text())
            .collect();
        assert!(text.contains("raftgres & etcd"));
        assert!(text.contains("256"));
    }

    #[test]
    fn points_are_ordered_by_clients_and_higher_values_sit_higher() {
        let svg = throughput_and_p99_svg("t", &two_systems());
        let document = roxmltree::Document::parse(&svg).unwrap();
        let first_line = document
            .descendants()
            .find(|node| node.has_tag_name("polyline"))
            .unwrap();
        let coordinates: Vec<(f64, f64)> = first_line
            .attribute("points")
            .unwrap()
            .split(' ')
            .map(|pair| {
                let (x, y) = pair.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(coordinates.windows(2).all(|pair| pair[0].0 < pair[1].0));
        // Throughput grows with clients here, so y (downwards) shrinks.
        assert!(coordinates.windows(2).all(|pair| pair[0].1 > pair[1].1));
    }

    #[test]
    fn axis_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(20_000.0), 20_000.0);
        assert_eq!(nice_ceiling(21_000.0), 25_000.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        // An empty plot is still a document.
        roxmltree::Document::parse(&throughput_and_p99_svg("empty", &[])).unwrap();
    }
}

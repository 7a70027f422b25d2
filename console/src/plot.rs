//! The console's plots, drawn on the server as SVG with `plotters`: the
//! browser gets a finished picture (no charting script to ship or trust, and
//! an offline cluster needs nothing from a CDN), every point is one `<circle>`
//! and every heatmap cell one `<rect>` that tests can count. Pure: points in,
//! SVG text out.

use plotters::prelude::*;
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};

/// How the points are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scatter,
    /// Points joined in x order (a 1-D sweep).
    Line,
    /// x and y on a grid, the colour parameter as the cell's colour (a 2-D sweep).
    Heatmap,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "scatter" => Some(Kind::Scatter),
            "line" => Some(Kind::Line),
            "heatmap" => Some(Kind::Heatmap),
            _ => None,
        }
    }
}

/// One point: x, y and the optional colour value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub c: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Plot {
    pub kind: Kind,
    pub x_label: String,
    pub y_label: String,
    pub color_label: Option<String>,
    pub points: Vec<Point>,
}

pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 440;

/// Axis numbers: four significant digits, scientific when very large or small.
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (4 - 1 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return None;
    }
    Some(padded(lo, hi))
}

/// A range with room around it; a single value gets a unit-ish band.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if lo == hi {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * 0.05;
    (lo - d, hi + d)
}

/// The colour for `c` on the viridis scale over `[lo, hi]`.
fn colour(c: Option<f64>, lo: f64, hi: f64) -> RGBColor {
    match c {
        Some(v) if v.is_finite() => {
            let (lo, hi) = if lo < hi { (lo, hi) } else { (lo, lo + 1.0) };
            ViridisRGB.get_color_normalized(v.clamp(lo, hi), lo, hi)
        }
        _ => RGBColor(31, 119, 180),
    }
}

/// Cell edges around sorted distinct centres: halfway between neighbours.
fn edges(centres: &[f64]) -> Vec<(f64, f64)> {
    let n = centres.len();
    (0..n)
        .map(|i| {
            let left = if i == 0 {
                centres[0]
                    - if n > 1 {
                        (centres[1] - centres[0]) / 2.0
                    } else {
                        0.5
                    }
            } else {
                (centres[i - 1] + centres[i]) / 2.0
            };
            let right = if i + 1 == n {
                centres[i]
                    + if n > 1 {
                        (centres[i] - centres[i - 1]) / 2.0
                    } else {
                        0.5
                    }
            } else {
                (centres[i] + centres[i + 1]) / 2.0
            };
            (left, right)
        })
        .collect()
}

fn distinct(mut v: Vec<f64>) -> Vec<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// Draws the plot. An empty plot is a frame saying so, not an error: a
/// filter that matches nothing is a normal answer.
pub fn svg(p: &Plot) -> Result<String, DrawError> {
    let mut out = String::new();
    draw(p, &mut out).map_err(DrawError)?;
    Ok(out)
}

/// The drawing backend failed (plotters' own error, kept whole).
#[derive(Debug, thiserror::Error)]
#[error("drawing the plot: {0}")]
pub struct DrawError(Box<dyn std::error::Error>);

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(p: &Plot, out: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts: Vec<Point> = p
        .points
        .iter()
        .copied()
        .filter(|q| q.x.is_finite() && q.y.is_finite())
        .collect();
    let (cl, ch) = pts
        .iter()
        .filter_map(|q| q.c)
        .filter(|c| c.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, c| match acc {
            None => Some((c, c)),
            Some((lo, hi)) => Some((lo.min(c), hi.max(c))),
        })
        .unwrap_or((0.0, 1.0));
    let with_bar = p.color_label.is_some() && pts.iter().any(|q| q.c.is_some());
    let (plot_area, bar_area) = if with_bar {
        root.split_horizontally(WIDTH - 90)
    } else {
        root.split_horizontally(WIDTH)
    };
    let (Some(xr), Some(yr)) = (span(pts.iter().map(|q| q.x)), span(pts.iter().map(|q| q.y)))
    else {
        plot_area.draw(&Text::new(
            "no points match",
            (WIDTH as i32 / 2 - 60, HEIGHT as i32 / 2),
            ("sans-serif", 16),
        ))?;
        root.present()?;
        return Ok(());
    };
    let xs = distinct(pts.iter().map(|q| q.x).collect());
    let ys = distinct(pts.iter().map(|q| q.y).collect());
    let (xr, yr) = if p.kind == Kind::Heatmap {
        let (ex, ey) = (edges(&xs), edges(&ys));
        ((ex[0].0, ex[ex.len() - 1].1), (ey[0].0, ey[ey.len() - 1].1))
    } else {
        (xr, yr)
    };
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(78)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    match p.kind {
        Kind::Heatmap => {
            let (ex, ey) = (edges(&xs), edges(&ys));
            let at = |v: f64, centres: &[f64]| centres.iter().position(|c| *c == v);
            chart.draw_series(pts.iter().filter_map(|q| {
                let (i, j) = (at(q.x, &xs)?, at(q.y, &ys)?);
                Some(Rectangle::new(
                    [(ex[i].0, ey[j].0), (ex[i].1, ey[j].1)],
                    colour(q.c, cl, ch).filled(),
                ))
            }))?;
        }
        Kind::Line | Kind::Scatter => {
            if p.kind == Kind::Line {
                let mut sorted = pts.clone();
                sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
                chart.draw_series(LineSeries::new(
                    sorted.iter().map(|q| (q.x, q.y)),
                    RGBColor(120, 120, 120).stroke_width(2),
                ))?;
            }
            chart.draw_series(
                pts.iter()
                    .map(|q| Circle::new((q.x, q.y), 4, colour(q.c, cl, ch).filled())),
            )?;
        }
    }
    if with_bar {
        draw_colour_bar(&bar_area, p.color_label.as_deref().unwrap_or(""), cl, ch)?;
    }
    root.present()?;
    Ok(())
}

fn draw_colour_bar(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    label: &str,
    lo: f64,
    hi: f64,
) -> DrawResult {
    let steps = 24;
    let (top, bottom) = (40, HEIGHT as i32 - 60);
    let h = (bottom - top) as f64 / steps as f64;
    // Bands as polygons, not rects, so that heatmap cells stay countable.
    for i in 0..steps {
        let v = hi - (hi - lo) * (i as f64 + 0.5) / steps as f64;
        let y0 = top + (i as f64 * h) as i32;
        let y1 = top + ((i + 1) as f64 * h).ceil() as i32;
        area.draw(&Polygon::new(
            vec![(10, y0), (30, y0), (30, y1), (10, y1)],
            colour(Some(v), lo, hi).filled(),
        ))?;
    }
    let font = ("sans-serif", 12);
    area.draw(&Text::new(tick(hi), (34, top), font))?;
    area.draw(&Text::new(tick(lo), (34, bottom - 10), font))?;
    area.draw(&Text::new(label.to_string(), (4, 20), font))?;
    Ok(())
}

/// The points as CSV (header from the labels), full precision; labels
/// are quoted as RFC 4180 wants (commas, quotes, CR and LF).
pub fn csv(p: &Plot) -> std::io::Result<String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let mut header = vec![p.x_label.as_str(), p.y_label.as_str()];
    header.extend(p.color_label.as_deref());
    w.write_record(&header)?;
    for q in &p.points {
        let mut row = vec![q.x.to_string(), q.y.to_string()];
        if p.color_label.is_some() {
            row.push(q.c.map(|c| c.to_string()).unwrap_or_default());
        }
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    String::from_utf8(bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize, m: usize) -> Vec<Point> {
        (0..n)
            .flat_map(|i| {
                (0..m).map(move |j| Point {
                    x: 300.0 + 50.0 * i as f64,
                    y: 1.0 + j as f64,
                    c: Some((i * j) as f64),
                })
            })
            .collect()
    }

    fn plot(kind: Kind, points: Vec<Point>) -> Plot {
        Plot {
            kind,
            x_label: "temperature [K]".into(),
            y_label: "stress [Pa]".into(),
            color_label: Some("pressure [bar]".into()),
            points,
        }
    }

    #[test]
    fn every_point_is_one_circle_and_every_cell_one_rect() {
        let s = svg(&plot(Kind::Scatter, grid(8, 5))).unwrap();
        assert_eq!(s.matches("<circle").count(), 40, "{s}");
        assert!(s.contains("temperature [K]") && s.contains("pressure [bar]"));
        let s = svg(&plot(Kind::Line, grid(8, 1))).unwrap();
        assert_eq!(s.matches("<circle").count(), 8);
        assert!(s.contains("<polyline"));
        let s = svg(&plot(Kind::Heatmap, grid(8, 5))).unwrap();
        let background_and_frame = svg(&plot(Kind::Heatmap, grid(1, 1)))
            .unwrap()
            .matches("<rect")
            .count()
            - 1;
        assert_eq!(s.matches("<rect").count() - background_and_frame, 40);
        assert_eq!(s.matches("<circle").count(), 0);
    }

    #[test]
    fn empty_and_odd_inputs_still_draw() {
        let s = svg(&plot(Kind::Scatter, vec![])).unwrap();
        assert!(s.contains("no points match"));
        let one = vec![
            Point {
                x: 1.0,
                y: 1.0,
                c: None,
            },
            Point {
                x: f64::NAN,
                y: 2.0,
                c: None,
            },
        ];
        assert_eq!(
            svg(&plot(Kind::Scatter, one))
                .unwrap()
                .matches("<circle")
                .count(),
            1
        );
    }

    #[test]
    fn ticks_and_csv_read_well() {
        assert_eq!(tick(500.0), "500");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(1.23456e8), "1.23e8");
        assert_eq!(tick(0.0), "0");
        let c = csv(&plot(
            Kind::Scatter,
            vec![Point {
                x: 1.5,
                y: 106309500.00000004,
                c: None,
            }],
        ));
        assert_eq!(
            c.unwrap(),
            "temperature [K],stress [Pa],pressure [bar]\n1.5,106309500.00000004,\n"
        );
        let mut odd = plot(Kind::Scatter, Vec::new());
        odd.x_label = "a,b".into();
        odd.y_label = "line\rbreak \"q\"".into();
        odd.color_label = None;
        assert_eq!(csv(&odd).unwrap(), "\"a,b\",\"line\rbreak \"\"q\"\"\"\n");
    }
}

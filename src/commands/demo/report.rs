//! The demo's HTML report: SVG charts of the runs' metrics, the generations, the sweep.

use super::{Generation, Spread, StudentResult, SweepPoint};
use student_train::EpochMetrics;

/// One line of a chart: its points, and the points of each seed drawn as dots around it.
struct Series {
    name: String,
    color: &'static str,
    line: Vec<(f64, f64)>,
    dots: Vec<(f64, f64)>,
}

/// An SVG line chart with ticks on both axes; `log_x` spaces x by log₂ (stored epochs),
/// `percent` prints y as a percentage.
fn svg_chart(title: &str, x_label: &str, series: &[Series], log_x: bool, percent: bool) -> String {
    let (w, h, pad) = (560.0, 300.0, 52.0);
    let pts = || series.iter().flat_map(|s| s.line.iter().chain(&s.dots));
    if pts().next().is_none() {
        return String::new();
    }
    let fx = |x: f64| if log_x { x.max(1e-9).log2() } else { x };
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts() {
        (x0, x1) = (x0.min(fx(x)), x1.max(fx(x)));
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    if !log_x {
        x0 = x0.min(0.0);
    }
    if percent {
        // Whole percentage points, up to 100%.
        (y0, y1) = (
            (y0 * 100.0).floor() / 100.0,
            ((y1 * 100.0).ceil() / 100.0).min(1.0),
        );
    } else {
        (y0, y1) = (0.0, y1 * 1.1);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 0.01;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let x = |v: f64| pad + (w - 2.0 * pad) * (fx(v) - x0) / (x1 - x0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - y0) / (y1 - y0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><text x="{pad}" y="20" font-weight="bold">{title}</text><line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#999"/>"##,
        b = h - pad,
        r = w - pad,
    );
    for k in 0..=4 {
        let v = y0 + (y1 - y0) * f64::from(k) / 4.0;
        let label = if percent {
            // Quarter steps of a range of a few points need two decimals.
            let digits = if y1 - y0 < 0.04 { 2 } else { 1 };
            format!("{:.digits$}%", 100.0 * v)
        } else {
            format!("{v:.3}")
        };
        s += &format!(r#"<text x="2" y="{:.1}">{label}</text>"#, y(v) + 4.0);
    }
    // x ticks: every distinct x of a log axis (the stored epochs); about eight on a linear one.
    let mut ticks: Vec<f64> = if log_x {
        let mut t: Vec<f64> = pts().map(|p| p.0).collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    } else {
        let step = ((x1 / 8.0).ceil()).max(1.0);
        (0..=(x1 / step) as u32)
            .map(|k| f64::from(k) * step)
            .collect()
    };
    ticks.retain(|t| t.is_finite());
    for t in ticks {
        s += &format!(
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#999"/><text x="{0:.1}" y="{3}" text-anchor="middle">{t}</text>"##,
            x(t),
            h - pad,
            h - pad + 4.0,
            h - pad + 16.0
        );
    }
    s += &format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x_label}</text>"#,
        w / 2.0,
        h - 12.0
    );
    for (i, se) in series.iter().enumerate() {
        let path: Vec<String> = se
            .line
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        s += &format!(
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" fill="{c}">{}</text>"#,
            path.join(" "),
            w - pad - 170.0,
            pad + 16.0 * i as f64,
            se.name,
            c = se.color,
        );
        for &(a, b) in &se.dots {
            s += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}" fill-opacity="0.5"/>"#,
                x(a),
                y(b),
                se.color
            );
        }
    }
    s + "</svg>"
}

/// A self-contained HTML page: test accuracy, agreement and KL per epoch, the generations, the
/// `--sweep` table and plots, and the grid of what the teacher saw (`grid`, a PNG beside it).
pub(super) fn report_html(
    curves: &[(&str, Vec<EpochMetrics>)],
    gens: &[Generation],
    sweep: &[SweepPoint],
    grid: Option<&str>,
) -> String {
    const COLORS: [&str; 3] = ["#555", "#d62728", "#1f77b4"];
    let per_epoch = |title: &str, percent: bool, get: &dyn Fn(&EpochMetrics) -> Option<f64>| {
        let series: Vec<Series> = curves
            .iter()
            .enumerate()
            .map(|(i, (name, m))| Series {
                name: name.to_string(),
                color: COLORS[i % COLORS.len()],
                line: m
                    .iter()
                    // Epochs trained (1-based), as the progress lines count them.
                    .filter_map(|e| Some((f64::from(e.epoch + 1), get(e)?)))
                    .collect(),
                dots: Vec::new(),
            })
            .filter(|s| !s.line.is_empty())
            .collect();
        svg_chart(title, "epoch", &series, false, percent)
    };
    let mut rows = String::new();
    for g in gens {
        rows += &format!(
            "<tr><td>{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.4}</td></tr>",
            g.generation,
            100.0 * g.teacher_accuracy,
            100.0 * g.student_kd.accuracy,
            100.0 * g.student_kd.agreement,
            g.student_kd.kl
        );
    }
    let mut body = format!(
        "<h1>distill demo: MNIST, LeNet-5</h1>{}{}{}<h2>Generations</h2><table border=\"1\" \
         cellpadding=\"4\"><tr><th>gen</th><th>teacher accuracy</th><th>kd student accuracy</th>\
         <th>agreement</th><th>KL(t‖s)</th></tr>{rows}</table>",
        per_epoch("Test accuracy", true, &|e| e.test_accuracy),
        per_epoch("Test agreement with the teacher", true, &|e| e
            .test_agreement),
        per_epoch("Test KL(teacher ‖ student)", false, &|e| e.test_kl),
    );
    if !sweep.is_empty() {
        let series = |get: &dyn Fn(&StudentResult) -> f64| Series {
            name: format!("kd student, mean of {} seeds", sweep[0].runs.len()),
            color: COLORS[1],
            line: sweep
                .iter()
                .map(|p| {
                    let v: Vec<f64> = p.runs.iter().map(get).collect();
                    (f64::from(p.label_epochs), Spread::of(&v).mean)
                })
                .collect(),
            dots: sweep
                .iter()
                .flat_map(|p| p.runs.iter().map(|r| (f64::from(p.label_epochs), get(r))))
                .collect(),
        };
        let mut srows = String::new();
        for p in sweep {
            srows += &format!(
                "<tr><td>{}</td><td>{:.1}</td><td>{:.2} ± {:.2}%</td><td>{:.4} ± {:.4}</td>\
                 <td>{:.2} ± {:.2}%</td></tr>",
                p.label_epochs,
                p.bytes_per_sample,
                100.0 * p.agreement.mean,
                100.0 * p.agreement.sd,
                p.kl.mean,
                p.kl.sd,
                100.0 * p.accuracy.mean,
                100.0 * p.accuracy.sd
            );
        }
        body += &format!(
            "<h2>Fidelity against stored epochs</h2><p>The same kd student, the same student \
             epochs, from stores of E augmented epochs (student epoch e replays store epoch e mod \
             E); dots are single seeds.</p>{}{}<table border=\"1\" cellpadding=\"4\"><tr><th>E \
             </th><th>store bytes per sample</th><th>test agreement</th><th>test KL(t‖s)</th>\
             <th>test accuracy</th></tr>{srows}</table>",
            svg_chart(
                "Test agreement against stored epochs",
                "stored epochs E (log scale)",
                &[series(&|r| r.agreement)],
                true,
                true
            ),
            svg_chart(
                "Test KL(teacher ‖ student) against stored epochs",
                "stored epochs E (log scale)",
                &[series(&|r| r.kl)],
                true,
                false
            ),
        );
    }
    if let Some(g) = grid {
        body += &format!(
            "<h2>What the teacher saw</h2><p>The first records of store epoch 0, replayed from \
             the store (<code>distill inspect --show</code>): each with its mixing and the \
             teacher's top classes.</p><img src=\"{g}\" alt=\"replayed records\">"
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>distill demo</title></head>\
         <body style=\"font-family:sans-serif\">{body}</body></html>\n"
    )
}

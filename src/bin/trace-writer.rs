//! `trace-writer`: the operators' command-line tool (replay, check, stats).

fn main() {
    eprintln!("trace-writer: not built yet");
    std::process::exit(2);
}

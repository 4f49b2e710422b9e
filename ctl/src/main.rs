//! `margayctl` (also installed as `kubectl-margay`): see `margay_ctl`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(margay_ctl::run(std::env::args_os()))
}

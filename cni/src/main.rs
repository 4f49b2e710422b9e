//! `margay-cni`: the CNI plugin binary (`type: margay`).

fn main() {
    std::process::exit(margay_cni::main_with_process_io());
}

fn main() {
    println!("vpop {}", env!("CARGO_PKG_VERSION"));
}

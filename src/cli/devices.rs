//! `vpop devices`: the GPU adapters wgpu can use.

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {}

pub fn run(_args: &DevicesArgs) -> anyhow::Result<()> {
    let adapters = crate::backend::wgpu::list_adapters();
    if adapters.is_empty() {
        println!("no wgpu adapter found (install a Vulkan driver, e.g. mesa-vulkan-drivers for the lavapipe CPU adapter)");
        return Ok(());
    }
    println!(
        "{:<48} {:<8} {:<14} {:<5} {:<5}",
        "adapter", "backend", "type", "f64", "f16"
    );
    for a in adapters {
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!(
            "{:<48} {:<8} {:<14} {:<5} {:<5}",
            a.name,
            a.backend,
            a.device_type,
            yes(a.f64),
            yes(a.f16)
        );
    }
    println!(
        "\nbackend = \"wgpu\" integrates trials in f32 on the high-performance adapter (a \
         software one if that is all there is), and in f64 with precision = \"f64\" where that \
         adapter has f64 = yes; backend = \"auto\" never picks a software adapter (type Cpu) \
         over the CPU reference, nor wgpu for f64."
    );
    Ok(())
}

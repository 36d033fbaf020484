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
    println!("\nThe WGSL integrator kernels are not available yet: trials run on the CPU backend.");
    Ok(())
}

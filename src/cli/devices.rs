//! `vpop devices`: the CUDA devices and the GPU adapters wgpu can use.

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {}

pub fn run(_args: &DevicesArgs) -> anyhow::Result<()> {
    cuda();
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

#[cfg(feature = "cuda")]
fn cuda() {
    match crate::backend::cuda::list_devices() {
        Ok(devices) if !devices.is_empty() => {
            println!(
                "{:<8} {:<40} {:<7} {:>10} {:>4}",
                "cuda", "device", "arch", "memory", "SMs"
            );
            for d in &devices {
                println!(
                    "{:<8} {:<40} {:<7} {:>6.1} GiB {:>4}",
                    d.ordinal,
                    d.name,
                    d.arch,
                    d.memory_bytes as f64 / f64::from(1u32 << 30),
                    d.multiprocessors
                );
            }
            println!(
                "backend = \"cuda\" deals every chunk across these {} device(s), three streams \
                 each (VPOP_CUDA_DEVICES=0,1 picks some).\n",
                devices.len()
            );
        }
        Ok(_) => println!("no CUDA device: the driver shows none\n"),
        Err(e) => println!("no CUDA device: {e}\n"),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda() {
    println!("no CUDA: this build of vpop has no CUDA support (cargo feature `cuda`)\n");
}

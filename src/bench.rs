//! `lopper bench`: latency, throughput and a roofline of compiled code.
//!
//! The model is compiled in memory (the same code generator as `compile`),
//! its buffers are allocated once, and each timed call runs only the
//! kernels. Times are single calls after warm-up; the report gives the
//! median, the minimum and the maximum (the machines are shared: compare
//! medians, and trust the minimum as the clean figure). The machine's peak
//! comes from a short FMA loop (AVX-512 or AVX2 when the CPU has them) unless
//! `--peak-gflops` gives it; its memory bandwidth from summing a 64 MiB
//! array unless `--peak-gbps` gives it.

use anyhow::{bail, Result};
use lopper_backends::cranelift::JitModule;
use lopper_ir::loops::{kernel_cost, Module};
use lopper_ir::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// Latency statistics of repeated calls, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// The median call.
    pub median: f64,
    /// The fastest call.
    pub min: f64,
    /// The slowest call.
    pub max: f64,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        Stats {
            median: samples[samples.len() / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }
}

/// Times `iters` calls of `f` after `warmup` calls.
pub fn time_calls(warmup: usize, iters: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        f();
    }
    let samples = (0..iters.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    Stats::of(samples)
}

/// The machine's single-thread fp32 peak in GFLOP/s, from independent FMA
/// chains (AVX-512, else AVX2 + FMA, else SSE multiply and add).
pub fn measure_peak_gflops() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { fma512_peak() };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { fma_peak() };
        }
    }
    sse_peak()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak() -> f64 {
    use std::arch::x86_64::*;
    let iters = 4_000_000u64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut acc = [_mm256_set1_ps(0.0); 10];
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        let start = Instant::now();
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let mut sink = [0.0f32; 8];
        let mut total = _mm256_set1_ps(0.0);
        for x in acc {
            total = _mm256_add_ps(total, x);
        }
        _mm256_storeu_ps(sink.as_mut_ptr(), total);
        std::hint::black_box(sink);
        best = best.max((iters * 10 * 8 * 2) as f64 / secs / 1e9);
    }
    best
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma512_peak() -> f64 {
    use std::arch::x86_64::*;
    let iters = 4_000_000u64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        let start = Instant::now();
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let mut total = _mm512_set1_ps(0.0);
        for x in acc {
            total = _mm512_add_ps(total, x);
        }
        std::hint::black_box(_mm512_reduce_add_ps(total));
        best = best.max((iters * 12 * 16 * 2) as f64 / secs / 1e9);
    }
    best
}

/// The peak of 128-bit FMA (`f32x4`, what Cranelift emits), in GFLOP/s.
pub fn measure_peak_128_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("fma") {
            // SAFETY: the feature was detected at run time.
            return Some(unsafe { fma128_peak() });
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fma128_peak() -> f64 {
    use std::arch::x86_64::*;
    let iters = 4_000_000u64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut acc = [_mm_set1_ps(0.0); 10];
        let a = _mm_set1_ps(0.999_999);
        let b = _mm_set1_ps(1e-7);
        let start = Instant::now();
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm_fmadd_ps(*x, a, b);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let mut total = _mm_set1_ps(0.0);
        for x in acc {
            total = _mm_add_ps(total, x);
        }
        let mut sink = [0.0f32; 4];
        _mm_storeu_ps(sink.as_mut_ptr(), total);
        std::hint::black_box(sink);
        best = best.max((iters * 10 * 4 * 2) as f64 / secs / 1e9);
    }
    best
}

fn sse_peak() -> f64 {
    let iters = 4_000_000u64;
    let mut acc = [[0.0f32; 4]; 8];
    let start = Instant::now();
    for _ in 0..iters {
        for x in acc.iter_mut() {
            for l in x.iter_mut() {
                *l = *l * 0.999_999 + 1e-7;
            }
        }
    }
    std::hint::black_box(acc);
    (iters * 8 * 4 * 2) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Read bandwidth from memory in GB/s: the best of three sums of 64 MiB.
pub fn measure_bandwidth_gbps() -> f64 {
    let words = 64 << 20 >> 3;
    let data: Vec<u64> = (0..words as u64).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let sum: u64 = data.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// One kernel's row of the report.
pub struct KernelRow {
    /// Its name.
    pub name: String,
    /// Its latency.
    pub stats: Stats,
    /// FLOPs per call.
    pub flops: f64,
    /// Bytes of the buffers it touches.
    pub bytes: f64,
}

/// Everything `lopper bench` measured.
pub struct Report {
    /// The model's name.
    pub model: String,
    /// Sizes bound for the run.
    pub sizes: BTreeMap<String, usize>,
    /// Whole-model latency.
    pub stats: Stats,
    /// FLOPs per call.
    pub flops: f64,
    /// Timed calls.
    pub iters: usize,
    /// The peak used for the fraction (GFLOP/s) and whether it was measured.
    pub peak_gflops: f64,
    /// Memory bandwidth for the roofline (GB/s).
    pub bandwidth_gbps: f64,
    /// The peak of 128-bit vectors, what Cranelift's code can reach.
    pub peak_128_gflops: Option<f64>,
    /// One row per kernel, when asked.
    pub kernels: Vec<KernelRow>,
}

/// Options of one measurement.
pub struct BenchOptions {
    /// Timed calls (0: as many as fit in about a second, at least 10).
    pub iters: usize,
    /// Untimed calls first.
    pub warmup: usize,
    /// Time each kernel on its own too.
    pub per_kernel: bool,
    /// The peak, instead of measuring it.
    pub peak_gflops: Option<f64>,
    /// The bandwidth, instead of measuring it.
    pub peak_gbps: Option<f64>,
    /// The code has 128-bit vectors (Cranelift): report that peak too.
    pub narrow: bool,
}

/// Measures `jit`, compiled from `m`, on random inputs.
pub fn bench_module(
    m: &Module,
    jit: &JitModule,
    sizes: &BTreeMap<String, usize>,
    options: &BenchOptions,
) -> Result<Report> {
    for s in &m.sizes {
        if !sizes.contains_key(s) {
            bail!("bind the symbolic size `{s}` with `--set {s}=N`");
        }
    }
    let mut inputs = HashMap::new();
    for (i, b) in m.buffers_of(lopper_ir::loops::BufferKind::In).enumerate() {
        let shape = b.ty.shape.bind(sizes).map_err(anyhow::Error::msg)?;
        inputs.insert(
            b.name.clone(),
            lopper_runtime::random_tensor(shape, 1 + i as u64),
        );
    }
    run_bench(m, jit, &inputs, sizes, options)
}

fn run_bench(
    m: &Module,
    jit: &JitModule,
    inputs: &HashMap<String, Tensor>,
    sizes: &BTreeMap<String, usize>,
    options: &BenchOptions,
) -> Result<Report> {
    let mut bound = jit.bind(inputs, sizes)?;
    let iters = if options.iters > 0 {
        options.iters
    } else {
        let start = Instant::now();
        bound.execute();
        let once = start.elapsed().as_secs_f64().max(1e-7);
        ((1.0 / once) as usize).clamp(10, 100_000)
    };
    let stats = time_calls(options.warmup, iters, || bound.execute());
    let costs: Vec<_> = m.kernels.iter().map(|k| kernel_cost(m, k, sizes)).collect();
    let flops = costs.iter().map(|c| c.flops).sum();
    let mut kernels = Vec::new();
    if options.per_kernel {
        for (k, kernel) in m.kernels.iter().enumerate() {
            let stats = time_calls(options.warmup, iters, || bound.execute_kernel(k));
            kernels.push(KernelRow {
                name: kernel.name.clone(),
                stats,
                flops: costs[k].flops,
                bytes: costs[k].bytes,
            });
        }
    }
    let peak_gflops = options.peak_gflops.unwrap_or_else(measure_peak_gflops);
    let bandwidth_gbps = if options.per_kernel {
        options.peak_gbps.unwrap_or_else(measure_bandwidth_gbps)
    } else {
        options.peak_gbps.unwrap_or(0.0)
    };
    let peak_128_gflops = if options.peak_gflops.is_some() || !options.narrow {
        None
    } else {
        measure_peak_128_gflops()
    };
    Ok(Report {
        model: m.name.clone(),
        sizes: sizes.clone(),
        stats,
        flops,
        iters,
        peak_gflops,
        bandwidth_gbps,
        peak_128_gflops,
        kernels,
    })
}

/// `1.23 ms`, `45.6 µs`.
pub fn duration_text(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3} s")
    } else if secs >= 1e-3 {
        format!("{:.3} ms", secs * 1e3)
    } else {
        format!("{:.2} µs", secs * 1e6)
    }
}

impl Report {
    /// Which roof bounds a kernel of this arithmetic intensity.
    fn bound_by(&self, intensity: f64) -> &'static str {
        if self.bandwidth_gbps <= 0.0 {
            return "?";
        }
        if intensity < self.peak_gflops / self.bandwidth_gbps {
            "memory"
        } else {
            "compute"
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let sizes: Vec<String> = self.sizes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let gflops = self.flops / self.stats.median / 1e9;
        let _ = writeln!(
            out,
            "model {} ({}), {} calls: median {} [min {}, max {}]",
            self.model,
            if sizes.is_empty() {
                "no sizes".into()
            } else {
                sizes.join(", ")
            },
            self.iters,
            duration_text(self.stats.median),
            duration_text(self.stats.min),
            duration_text(self.stats.max)
        );
        let narrow = self
            .peak_128_gflops
            .map(|p| {
                format!(
                    " ({:.1}% of the {p:.1} GFLOP/s of 128-bit vectors, Cranelift's width)",
                    100.0 * gflops / p
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:.4} GFLOP per call: {:.2} GFLOP/s at the median ({:.2} at the best), {:.1}% of the {:.1} GFLOP/s peak{narrow}",
            self.flops / 1e9,
            gflops,
            self.flops / self.stats.min / 1e9,
            100.0 * gflops / self.peak_gflops,
            self.peak_gflops
        );
        if !self.kernels.is_empty() {
            let _ = writeln!(
                out,
                "roofline: {:.1} GFLOP/s peak, {:.1} GB/s memory, ridge at {:.2} FLOP/byte",
                self.peak_gflops,
                self.bandwidth_gbps,
                self.peak_gflops / self.bandwidth_gbps
            );
            let mut rows = vec![[
                "kernel".to_string(),
                "median".into(),
                "share".into(),
                "MFLOP".into(),
                "kB".into(),
                "FLOP/B".into(),
                "GFLOP/s".into(),
                "bound".into(),
            ]];
            let total: f64 = self.kernels.iter().map(|k| k.stats.median).sum();
            for k in &self.kernels {
                let intensity = k.flops / k.bytes.max(1.0);
                rows.push([
                    format!("@{}", k.name),
                    duration_text(k.stats.median),
                    format!("{:.1}%", 100.0 * k.stats.median / total),
                    format!("{:.3}", k.flops / 1e6),
                    format!("{:.1}", k.bytes / 1e3),
                    format!("{intensity:.2}"),
                    format!("{:.2}", k.flops / k.stats.median / 1e9),
                    self.bound_by(intensity).into(),
                ]);
            }
            out.push_str(&crate::driver::table(&rows));
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        let stats = |s: &Stats| {
            format!(
                "{{\"median_s\": {:e}, \"min_s\": {:e}, \"max_s\": {:e}}}",
                s.median, s.min, s.max
            )
        };
        let kernels: Vec<String> = self
            .kernels
            .iter()
            .map(|k| {
                format!(
                    "{{\"name\": \"{}\", \"latency\": {}, \"flops\": {}, \"bytes\": {}}}",
                    k.name,
                    stats(&k.stats),
                    k.flops,
                    k.bytes
                )
            })
            .collect();
        format!(
            "{{\"model\": \"{}\", \"sizes\": {{{}}}, \"iters\": {}, \"latency\": {}, \"flops\": {}, \"gflops_median\": {:.4}, \"peak_gflops\": {:.3}, \"bandwidth_gbps\": {:.3}, \"kernels\": [{}]}}\n",
            self.model,
            sizes.join(", "),
            self.iters,
            stats(&self.stats),
            self.flops,
            self.flops / self.stats.median / 1e9,
            self.peak_gflops,
            self.bandwidth_gbps,
            kernels.join(", ")
        )
    }

    /// A log-log roofline with each kernel as a point, as SVG.
    pub fn roofline_svg(&self) -> String {
        let (w, h, pad) = (640.0, 420.0, 60.0);
        let (x0, x1) = (0.01f64.log10(), 1000f64.log10());
        let top = (self.peak_gflops * 2.0).log10();
        let (y0, y1) = (0.01f64.log10(), top);
        let px = |ai: f64| pad + (ai.log10() - x0) / (x1 - x0) * (w - 2.0 * pad);
        let py = |g: f64| h - pad - (g.max(0.01).log10() - y0) / (y1 - y0) * (h - 2.0 * pad);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">roofline of {} ({:.0} GFLOP/s, {:.0} GB/s)</text>",
            w / 2.0,
            self.model,
            self.peak_gflops,
            self.bandwidth_gbps
        );
        let _ = writeln!(
            s,
            "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            h - pad,
            w - pad,
            h - pad
        );
        let _ = writeln!(
            s,
            "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>",
            h - pad
        );
        for e in -2..=3 {
            let v = 10f64.powi(e);
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{v}</text>",
                px(v),
                h - pad + 16.0
            );
        }
        for e in -2..=(top.floor() as i32) {
            let v = 10f64.powi(e);
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
                pad - 6.0,
                py(v) + 4.0
            );
        }
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">arithmetic intensity (FLOP/byte)</text>", w / 2.0, h - 18.0);
        let _ = writeln!(s, "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">GFLOP/s</text>", h / 2.0, h / 2.0);
        // The roof: bandwidth × intensity up to the ridge, then the peak.
        let ridge = self.peak_gflops / self.bandwidth_gbps.max(1e-9);
        let start = 0.01f64.max(0.01 / self.bandwidth_gbps.max(1e-9));
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"/>",
            px(start),
            py(start * self.bandwidth_gbps),
            px(ridge),
            py(self.peak_gflops),
            px(1000.0),
            py(self.peak_gflops)
        );
        for k in &self.kernels {
            let ai = (k.flops / k.bytes.max(1.0)).clamp(0.011, 999.0);
            let g = k.flops / k.stats.median / 1e9;
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"firebrick\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                px(ai),
                py(g),
                px(ai) + 6.0,
                py(g) - 4.0,
                k.name
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Writes the roofline plot.
pub fn write_plot(report: &Report, path: &Path) -> Result<()> {
    std::fs::write(path, report.roofline_svg())
        .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))
}

//! Temporary timing harness (not committed).
#![allow(clippy::all, missing_docs)]
use pulp::{Simd, WithSimd};
use std::hint::black_box;
use std::time::Instant;
use tensorlet_kernels::{Activation, Conv2dParams, Kernels, Level};

struct Fma(usize);
impl WithSimd for Fma {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let a = simd.splat_f32s(0.999_999);
        let b = simd.splat_f32s(1e-7);
        let mut acc = [simd.splat_f32s(1.0); 12];
        for _ in 0..self.0 {
            for x in acc.iter_mut() {
                *x = simd.mul_add_f32s(*x, a, b);
            }
        }
        let mut s = simd.splat_f32s(0.0);
        for x in acc {
            s = simd.add_f32s(s, x);
        }
        simd.reduce_sum_f32s(s)
    }
}

struct Fma2(usize);
impl pulp::NullaryFnOnce for Fma2 {
    type Output = f32;
    #[inline(always)]
    fn call(self) -> f32 {
        let simd = pulp::x86::V3::try_new().unwrap();
        Fma(self.0).with_simd(simd)
    }
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}
unsafe extern "C" {
    fn clock_gettime(clk: i32, tp: *mut Timespec) -> i32;
}
fn cpu_now() -> f64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    unsafe { clock_gettime(3, &mut t) };
    t.sec as f64 + t.nsec as f64 * 1e-9
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = cpu_now();
        f();
        b = b.min(cpu_now() - t);
    }
    let _ = Instant::now();
    b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    let iters = 1_000_000;
    let peak_t = best(20, || {
        black_box(pulp::Arch::new().dispatch(Fma(black_box(iters))));
    });
    let peak = (iters * 12 * 16 * 2) as f64 / peak_t / 1e9;
    println!("peak {peak:.1} GFLOP/s");
    let xs = [batch, 32, 13, 13];
    let ws = [64, 32, 3, 3];
    let p = Conv2dParams::default();
    let os = [batch, 64, 11, 11];
    let x: Vec<f32> = (0..xs.iter().product::<usize>())
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..ws.iter().product::<usize>())
        .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let dy: Vec<f32> = (0..os.iter().product::<usize>())
        .map(|i| ((i * 31) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let flops = (2 * batch * 64 * 121 * 288) as f64;
    let only = args.get(2).cloned();
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let t2 = best(20, || {
        black_box(
            pulp::x86::V3::try_new()
                .unwrap()
                .vectorize(Fma2(black_box(iters))),
        );
    });
    println!(
        "avx2 peak {:.1} GFLOP/s",
        (iters * 12 * 8 * 2) as f64 / t2 / 1e9
    );
    for level in [Level::Avx512, Level::Avx2] {
        if let Some(o) = &only {
            if !o.starts_with(&format!("{level:?}")) {
                continue;
            }
        }
        let k = Kernels::with_level(level).unwrap();
        let packed = k.pack_conv2d(&w, ws, None, &p).unwrap();
        let mut out = vec![0.0; os.iter().product()];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; 64];
        let want = |n: &str| {
            only.as_ref()
                .is_none_or(|o| o.ends_with(n) || !o.contains('-'))
        };
        let tf = if want("fwd") {
            best(reps, || {
                k.conv2d_packed(&x, xs, &packed, Activation::None, &mut out)
                    .unwrap()
            })
        } else {
            f64::NAN
        };
        let ti = if want("in") {
            best(reps, || {
                k.conv2d_backward_input(&dy, &w, ws, xs, &p, &mut dx)
                    .unwrap()
            })
        } else {
            f64::NAN
        };
        let tw = if want("wt") {
            best(reps, || {
                k.conv2d_backward_weights(&x, xs, &dy, ws, &p, &mut dw, Some(&mut db))
                    .unwrap()
            })
        } else {
            f64::NAN
        };
        for &(m, kk, n, acc) in &[
            (64usize, 288usize, 121usize, false),
            (288, 64, 121, false),
            (288, 121, 64, true),
        ] {
            if !want("mm") {
                continue;
            }
            let a = vec![0.5f32; m * kk];
            let b = vec![0.25f32; kk * n];
            let mut o = vec![0.0f32; m * n];
            let t = best(reps, || {
                for _ in 0..batch {
                    k.matmul(&a, false, &b, false, m, kk, n, acc, &mut o)
                        .unwrap()
                }
            });
            let g = (2 * m * kk * n * batch) as f64 / t / 1e9;
            println!(
                "{level:?} matmul {m}x{kk}x{n} acc={acc}: {g:.1} GFLOP/s {:.1}%",
                100.0 * g / peak
            );
        }
        for (name, t) in [("forward", tf), ("bwd-input", ti), ("bwd-weights", tw)] {
            let g = flops / t / 1e9;
            println!(
                "{level:?} {name}: {:.2} ms, {g:.1} GFLOP/s, {:.1}% of peak",
                t * 1e3,
                100.0 * g / peak
            );
        }
    }
}

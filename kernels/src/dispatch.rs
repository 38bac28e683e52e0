//! SIMD level selection: [`Level`], and [`Kernels`], which holds the pulp arch token for one
//! level so that feature detection happens once, never in a kernel, and optionally the
//! [`ThreadPool`] whose threads a large product may use (none unless given: one thread).

use std::sync::{Arc, OnceLock};

use crate::threads::ThreadPool;

/// SIMD instruction level a [`Kernels`] runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Portable scalar code (pulp's `Scalar`, one lane).
    Scalar,
    /// x86-64-v3: AVX2 + FMA, 8 lanes (pulp `x86::V3`).
    Avx2,
    /// x86-64-v4: AVX-512, 16 lanes (pulp `x86::V4`).
    Avx512,
    /// AArch64 NEON, 4 lanes (pulp `aarch64::Neon`).
    Neon,
    /// WebAssembly SIMD128, 4 lanes (pulp `wasm::RelaxedSimd` when built with
    /// `+relaxed-simd`, else `wasm::Simd128`); needs `+simd128` at compile time.
    Simd128,
}

impl Level {
    /// Every level, from the most portable to the widest.
    pub const ALL: [Level; 5] = [
        Level::Scalar,
        Level::Neon,
        Level::Simd128,
        Level::Avx2,
        Level::Avx512,
    ];
}

/// The kernels at one SIMD level; dispatch is resolved once, at construction.
///
/// Cheap to clone (clones share the thread pool, if any). Obtain one with
/// [`Kernels::detect`] (best level, cached) or [`Kernels::with_level`]; both run every op on
/// the calling thread, and [`Kernels::with_pool`] (or [`Kernels::with_threads`]) lets large
/// dense products use a pool's threads too.
#[derive(Clone, Debug)]
pub struct Kernels {
    level: Level,
    arch: pulp::Arch,
    /// The threads large ops may use besides the caller's; `None` on wasm32.
    pool: Option<Arc<ThreadPool>>,
}

impl Kernels {
    /// The best level this CPU supports. Detection runs once per process; later calls return
    /// the cached result.
    pub fn detect() -> Kernels {
        static DETECTED: OnceLock<Kernels> = OnceLock::new();
        DETECTED
            .get_or_init(|| {
                let best = *Self::available_levels()
                    .last()
                    .expect("scalar is always available");
                Self::with_level(best).expect("level was just detected")
            })
            .clone()
    }

    /// The kernels at `level`, or `None` if this CPU (or this build target) lacks it.
    pub fn with_level(level: Level) -> Option<Kernels> {
        let arch = match level {
            Level::Scalar => Some(pulp::Arch::Scalar),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Level::Avx2 => pulp::x86::V3::try_new().map(pulp::Arch::V3),
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Level::Avx512 => pulp::x86::V4::try_new().map(pulp::Arch::V4),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => pulp::aarch64::Neon::try_new().map(pulp::Arch::Neon),
            #[cfg(target_arch = "wasm32")]
            // Relaxed SIMD when the build enables it: its `f32x4.relaxed_madd` becomes a real
            // FMA in wasmtime, where plain SIMD128 has only a multiply and an add.
            Level::Simd128 => pulp::wasm::RelaxedSimd::try_new()
                .map(pulp::Arch::RelaxedSimd)
                .or_else(|| pulp::wasm::Simd128::try_new().map(pulp::Arch::Simd128)),
            #[allow(unreachable_patterns)]
            _ => None,
        }?;
        Some(Kernels {
            level,
            arch,
            pool: None,
        })
    }

    /// These kernels, letting one op use the threads of `pool`: the calling thread and the
    /// pool's workers that are idle when the op starts (see [`ThreadPool::run_scoped`]). Only
    /// dense products (`dense`, `dense_packed`) of at least two register tiles of rows and
    /// about 8 MFLOP per thread are split, by rows, so that each thread's share outweighs
    /// handing it over; everything else runs on the calling thread. Results are identical to
    /// one thread's: each output row is computed by exactly one thread, in the same order.
    ///
    /// One pool may serve many `Kernels` and concurrent callers: an op that finds every worker
    /// busy (say, serving other requests) runs on its own thread rather than wait. On wasm32
    /// the pool is ignored and every op runs on the calling thread.
    pub fn with_pool(self, pool: Arc<ThreadPool>) -> Kernels {
        Kernels {
            pool: (!cfg!(target_arch = "wasm32")).then_some(pool),
            ..self
        }
    }

    /// [`Kernels::with_pool`] with a new pool of its own of `threads` threads (the caller's and
    /// `threads - 1` workers), shared by this value's clones; `0` and `1` mean no pool. If the
    /// OS refuses to start the workers, or on wasm32, every op runs on the calling thread
    /// ([`Kernels::threads`] then says 1). To share workers between several `Kernels`, make
    /// one [`ThreadPool`] and pass it to `with_pool`.
    pub fn with_threads(self, threads: usize) -> Kernels {
        let pool = if threads <= 1 || cfg!(target_arch = "wasm32") {
            None
        } else {
            ThreadPool::new(threads).ok().map(Arc::new)
        };
        Kernels { pool, ..self }
    }

    /// The most threads one op may use: the size of the pool (see [`Kernels::with_pool`]), 1
    /// without one.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.threads())
    }

    /// These kernels without their pool (for the parts of an op run on a pool's worker).
    pub(crate) fn single_threaded(&self) -> Kernels {
        Kernels {
            pool: None,
            ..self.clone()
        }
    }

    /// The pool large ops use, if any (see [`Kernels::with_pool`]).
    pub fn pool(&self) -> Option<&Arc<ThreadPool>> {
        self.pool.as_ref()
    }

    /// Every level this CPU can run, [`Level::Scalar`] first and the widest last.
    pub fn available_levels() -> Vec<Level> {
        Level::ALL
            .into_iter()
            .filter(|&l| Self::with_level(l).is_some())
            .collect()
    }

    /// The level these kernels run at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Runs `op` at this level, through its [`Entry`].
    #[inline(always)]
    pub(crate) fn run<Op: pulp::WithSimd>(&self, op: Op) -> Op::Output {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        match self.arch {
            // SAFETY: a `V4` or `V3` token exists only once `try_new` has found its features
            // on this CPU, and `Entry` enables exactly the token's features.
            pulp::Arch::V4(simd) => unsafe { op.avx512(simd) },
            pulp::Arch::V3(simd) => unsafe { op.avx2(simd) },
            _ => op.portable(pulp::Scalar::new()),
        }
        // In wasm, entering through `Entry` made the kernels component's batch eval about
        // 5% slower in wasmtime (4.85k against 5.1k images/s), so it keeps pulp's path.
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        self.arch.dispatch(op)
    }
}

/// The compiled entry points of an op, one per x86 level: each a function of its own with
/// the level's target features (pulp's feature lists for `V4` and `V3`; none for the
/// scalar level), into which the op's `#[inline(always)]` body is inlined. (Elsewhere the
/// ops still enter through pulp's `Arch::dispatch`.)
///
/// pulp's own `Arch::dispatch` does the same through `#[inline]` functions of pulp's, which
/// rustc copies into the codegen unit of each caller: every op entered from [`Kernels`]'
/// methods landed in one codegen unit, whose optimisation took most of this crate's 20
/// minutes of build on one core while the other units were long done. These are default
/// methods of a trait, never inlined, so rustc places each op's entry points with the
/// op's own type (its module's codegen unit) and the units build in parallel.
#[cfg_attr(
    not(any(target_arch = "x86", target_arch = "x86_64")),
    allow(dead_code)
)]
pub(crate) trait Entry: pulp::WithSimd + Sized {
    /// `self` at AVX-512 (x86-64-v4).
    ///
    /// # Safety
    /// The CPU has every feature of [`pulp::x86::V4`] (which holding one proves).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[target_feature(
        enable = "sse,sse2,fxsr,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,\
                  fma,lzcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
    )]
    #[inline(never)]
    unsafe fn avx512(self, simd: pulp::x86::V4) -> Self::Output {
        self.with_simd(simd)
    }

    /// `self` at AVX2 + FMA (x86-64-v3).
    ///
    /// # Safety
    /// The CPU has every feature of [`pulp::x86::V3`] (which holding one proves).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[target_feature(
        enable = "sse,sse2,fxsr,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,\
                  fma,lzcnt"
    )]
    #[inline(never)]
    unsafe fn avx2(self, simd: pulp::x86::V3) -> Self::Output {
        self.with_simd(simd)
    }

    /// `self` at a level that needs no target features (the scalar level).
    #[inline(never)]
    fn portable<S: pulp::Simd>(self, simd: S) -> Self::Output {
        self.with_simd(simd)
    }
}

impl<Op: pulp::WithSimd> Entry for Op {}

//! The apply kernels: CUDA C compiled at run time with NVRTC, once per
//! process and device architecture, loaded once per device.
//!
//! Two kernels, each driven by a table of 64-byte job descriptors
//! ([`crate::plan::Desc`]); block `b` finds its job by binary search on
//! `tile_start`, so one launch covers every job of a batch whatever its size:
//! - `tpde_phase1`: fills (`dst = base` or zeros), exact widening of a
//!   narrower float base (spec §6.2), the predictor of a quantized base
//!   (`f32(q) × scale` with `__fmul_rn`, NaN made canonical; spec §6.4;
//!   compiled with `--ftz=false --fmad=false`, no fast math), and dense chunks
//!   (`dst[i] = op(base[i], value[i])`, values re-interleaved from byte
//!   planes, 16-byte loads and stores on the aligned path);
//! - `tpde_sparse`: sparse chunks, `dst[p] = op(dst[p], value[j])` at
//!   positions the CPU decoded, run after phase 1 has filled the base;
//! - `tpde_varint_count` + `tpde_varint_apply`: sparse chunks whose gap
//!   stream goes up raw: per-segment counts and sums, then prefix sums give
//!   every position, which is checked and applied;
//! - `tpde_entropy` (phase 0, before the others): rANS-coded values planes
//!   (spec §5.6) decoded into device staging, one group of four threads per
//!   chunk (one per interleaved state, stepping together over the shared
//!   word stream: the lanes that take a word find it by a ballot and a
//!   prefix popcount), planes in order, the base context of `RansBase`
//!   planes read from the base in device memory; it checks what the CPU
//!   decoder checks during the decode and reports a failing plane;
//!   (v1.6) chunks whose planes have 32 states are decoded by the same
//!   code (a template on the group size) with one full warp per chunk: a
//!   batch's entropy table holds its 4-state jobs first, then its 32-state
//!   ones ([`crate::plan::Batch::phase0_narrow`]), and in the one launch
//!   the first blocks take the 4-state jobs, the others the 32-state ones
//!   (so both kinds decode at once); a chunk mixing 4- and 32-state planes
//!   is decoded on the CPU ([`crate::plan::entropy_input`]).
//!
//! All combine arithmetic is on unsigned words of the dtype's width, as in
//! `tpde_format::codec::combine`, so every dtype is bit-exact; the one float
//! operation (the dequant product) is a single IEEE binary32 multiply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::error::{cuda, GpuError, Result};
use crate::plan::THREADS;

/// The CUDA source of the kernels.
pub const SOURCE: &str = r#"
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct Job {
    u64 dst, base, vals, pos, n, m;
    u32 tile_start, tiles;
    u8 width, kind, op, flags;
    u32 pad;
};

// Rotate right by one bit within T (v1.4 rotated ops).
template <typename T> __device__ __forceinline__ T rotr1(T v) {
    return (T)((T)(v >> 1) | (T)(v << (8 * sizeof(T) - 1)));
}

template <typename T> __device__ __forceinline__ T comb(u32 op, T b, T v) {
    // op 3 (v1.1 zigzag add): b + unzigzag(v), unzigzag(v) = (v >> 1) ^ -(v & 1).
    // op 4 (v1.4 ReplaceRot): rotr1(v).
    return op == 0 ? (T)(b ^ v)
         : op == 1 ? (T)(b + v)
         : op == 3 ? (T)(b + (T)((T)(v >> 1) ^ (T)((T)0 - (T)(v & 1))))
         : op == 4 ? rotr1<T>(v)
         : v;
}

// Ops whose result does not depend on the base (Replace, ReplaceRot).
__device__ __forceinline__ bool ignores_base(u32 op) { return op == 2 || op == 4; }

// Block -> job: the last job whose tile_start <= blockIdx.x.
__device__ __forceinline__ const Job* find_job(const Job* jobs, u32 njobs, u32 tile) {
    u32 lo = 0, hi = njobs;
    while (hi - lo > 1) {
        u32 mid = (lo + hi) >> 1;
        if (jobs[mid].tile_start <= tile) lo = mid; else hi = mid;
    }
    return jobs + lo;
}

template <int E> struct Bytes;
template <> struct Bytes<16> { typedef uint4 V; };
template <> struct Bytes<8> { typedef uint2 V; };
template <> struct Bytes<4> { typedef u32 V; };

// Dense: E elements per thread of width W = sizeof(T).
template <typename T, int E>
__device__ __forceinline__ void dense(const Job& j, u64 tile) {
    const int W = sizeof(T);
    const u64 n = j.n;
    const u64 i0 = tile * (u64)(256 * E) + (u64)threadIdx.x * E;
    if (i0 >= n) return;
    const u8* vals = (const u8*)j.vals;
    T* dst = (T*)j.dst;
    const T* base = (const T*)j.base;
    const u32 op = j.op;
    if ((j.flags & 1) && i0 + E <= n) {
        union { typename Bytes<E>::V v; u8 b[E]; } pl[W];
        #pragma unroll
        for (int k = 0; k < W; k++)
            pl[k].v = *(const typename Bytes<E>::V*)(vals + (u64)k * n + i0);
        union { uint4 q[(E * W + 15) / 16]; T t[E]; } o, b;
        #pragma unroll
        for (int e = 0; e < E; e++) {
            T v = 0;
            #pragma unroll
            for (int k = 0; k < W; k++) v |= (T)pl[k].b[e] << (8 * (W - 1 - k));
            o.t[e] = v;
        }
        // Every op but Replace transforms the value, with no base too
        // (its base is zero: AddZigzag unzigzags, ReplaceRot rotates).
        if (op != 2) {
            const bool has_base = base && !ignores_base(op);
            #pragma unroll
            for (int q = 0; q < (E * W + 15) / 16; q++)
                b.q[q] = has_base ? ((const uint4*)(base + i0))[q] : make_uint4(0, 0, 0, 0);
            #pragma unroll
            for (int e = 0; e < E; e++) o.t[e] = comb<T>(op, b.t[e], o.t[e]);
        }
        #pragma unroll
        for (int q = 0; q < (E * W + 15) / 16; q++) ((uint4*)(dst + i0))[q] = o.q[q];
    } else {
        u64 end = i0 + E < n ? i0 + E : n;
        for (u64 i = i0; i < end; i++) {
            T v = 0;
            for (int k = 0; k < W; k++) v |= (T)vals[(u64)k * n + i] << (8 * (W - 1 - k));
            T bv = (base && !ignores_base(op)) ? base[i] : (T)0;
            dst[i] = comb<T>(op, bv, v);
        }
    }
}

// Fill: dst = base bytes, or zeros; 16 bytes per thread.
__device__ __forceinline__ void fill(const Job& j, u64 tile) {
    const u64 bytes = j.n * (u64)j.width;
    const u64 b0 = tile * 4096ull + (u64)threadIdx.x * 16;
    if (b0 >= bytes) return;
    u8* dst = (u8*)j.dst;
    const u8* base = (const u8*)j.base;
    if (base == dst) return;
    if ((j.flags & 1) && b0 + 16 <= bytes) {
        uint4 v = base ? *(const uint4*)(base + b0) : make_uint4(0, 0, 0, 0);
        *(uint4*)(dst + b0) = v;
    } else {
        u64 end = b0 + 16 < bytes ? b0 + 16 : bytes;
        for (u64 i = b0; i < end; i++) dst[i] = base ? base[i] : (u8)0;
    }
}

// Exact widening on bit patterns (spec 6.2, tpde_format::codec::widen):
// subnormals normalized, NaN payloads shifted, never quieted.
__device__ __forceinline__ u32 f16_to_f32(u32 h) {
    u32 sign = (h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return sign;
        u32 shift = __clz(man) - 21;
        man = (man << shift) & 0x3ff;
        return sign | ((127 - 15 + 1 - shift) << 23) | (man << 13);
    }
    if (exp == 0x1f) return sign | 0x7f800000u | (man << 13);
    return sign | ((exp + 127 - 15) << 23) | (man << 13);
}

__device__ __forceinline__ u64 f32_to_f64(u32 f) {
    u64 sign = (u64)(f >> 31) << 63, exp = (f >> 23) & 0xff, man = f & 0x7fffff;
    if (exp == 0) {
        if (man == 0) return sign;
        u64 shift = (u64)__clzll(man) - 40;
        man = (man << shift) & 0x7fffff;
        return sign | ((1023 - 127 + 1 - shift) << 52) | (man << 29);
    }
    if (exp == 0xff) return sign | 0x7ff0000000000000ull | (man << 29);
    return sign | ((exp + 1023 - 127) << 52) | (man << 29);
}

// Widen: op is the conversion (0 bf16->f32, 1 f16->f32, 2 bf16->f64,
// 3 f16->f64, 4 f32->f64); narrow elements at j.vals, 4 per thread.
__device__ __forceinline__ void widen(const Job& j, u64 tile) {
    #pragma unroll
    for (int r = 0; r < 4; r++) {
        u64 i = tile * 1024ull + (u64)r * 256 + threadIdx.x;
        if (i >= j.n) continue;
        if (j.op == 4) {
            ((u64*)j.dst)[i] = f32_to_f64(((const u32*)j.vals)[i]);
            continue;
        }
        u32 h = ((const u16*)j.vals)[i];
        u32 f = (j.op == 0 || j.op == 2) ? (h << 16) : f16_to_f32(h);
        if (j.op <= 1) ((u32*)j.dst)[i] = f;
        else ((u64*)j.dst)[i] = f32_to_f64(f);
    }
}

// Dequant (spec 6.4): dst[i] = bits(f32(q[i]) * scale[k]) as ONE binary32
// multiply rounded to nearest even (__fmul_rn: never contracted into an FMA),
// subnormals kept (compiled with --ftz=false, no fast math), every NaN
// product replaced by the canonical 0x7fc00000. Descriptor: base = codes,
// vals = first scale used, pos = elements per row, m = the job's first
// element's column, op = axis | signed << 2 | from_column << 3
// (tpde_gpu::plan::dequant_code). 4 elements per thread.
__device__ __forceinline__ void dequant(const Job& j, u64 tile) {
    const u8* q = (const u8*)j.base;
    const float* sc = (const float*)j.vals;
    const u32 axis = j.op & 3;
    const bool sg = (j.op >> 2) & 1;
    const u64 row = j.pos, col = j.m;
    const u64 lo = (j.op & 8) ? col : 0;
    // 32-bit index arithmetic when everything fits (64-bit division is slow).
    const bool narrow = row <= 0xffffffffull && col + j.n <= 0xffffffffull;
    #pragma unroll
    for (int r = 0; r < 4; r++) {
        u64 i = tile * 1024ull + (u64)r * 256 + threadIdx.x;
        if (i >= j.n) continue;
        u64 k = 0;
        if (axis != 0) {
            u64 e = col + i;
            if (narrow) {
                u32 e32 = (u32)e, r32 = (u32)row;
                k = axis == 1 ? (u64)(e32 / r32) : (u64)(e32 % r32) - lo;
            } else {
                k = axis == 1 ? e / row : e % row - lo;
            }
        }
        u32 c = q[i];
        float x = sg ? (float)(int)(signed char)c : (float)c;
        float v = __fmul_rn(x, sc[k]);
        u32 b = __float_as_uint(v);
        if ((b & 0x7fffffffu) > 0x7f800000u) b = 0x7fc00000u; // NaN
        ((u32*)j.dst)[i] = b;
    }
}

extern "C" __global__ void __launch_bounds__(256) tpde_phase1(const Job* jobs, u32 njobs) {
    __shared__ Job sj;
    if (threadIdx.x == 0) sj = *find_job(jobs, njobs, blockIdx.x);
    __syncthreads();
    const Job j = sj;
    const u64 tile = blockIdx.x - j.tile_start;
    if (j.kind == 0) { fill(j, tile); return; }
    if (j.kind == 5) { widen(j, tile); return; }
    if (j.kind == 6) { dequant(j, tile); return; }
    switch (j.width) {
        case 1: dense<u8, 16>(j, tile); break;
        case 2: dense<u16, 16>(j, tile); break;
        case 4: dense<u32, 8>(j, tile); break;
        default: dense<u64, 4>(j, tile); break;
    }
}

template <typename T>
__device__ __forceinline__ void scatter(const Job& j, u64 tile) {
    const int W = sizeof(T);
    const u64 m = j.m;
    const u32* pos = (const u32*)j.pos;
    const u8* vals = (const u8*)j.vals;
    T* dst = (T*)j.dst;
    #pragma unroll
    for (int r = 0; r < 4; r++) {
        u64 q = tile * 1024ull + (u64)r * 256 + threadIdx.x;
        if (q < m) {
            T v = 0;
            #pragma unroll
            for (int k = 0; k < W; k++) v |= (T)vals[(u64)k * m + q] << (8 * (W - 1 - k));
            u32 p = pos[q];
            dst[p] = comb<T>(j.op, dst[p], v);
        }
    }
}

// ---- positions decoded on the device (kind 4) ----------------------------
// The gap stream (LEB128, spec 5.5) at j.pos has j.base bytes. Every byte
// without the continuation bit ends one gap; its value is read back over at
// most five bytes. position_k = sum_{i<=k}(gap_i + 1) - 1. Blocks own
// 16 KiB segments: pass 1 counts each segment's gaps and sums (gap + 1),
// pass 2 adds the earlier segments' totals and applies. A stream the CPU
// reader would refuse (varint over five bytes, position past the chunk,
// count != m, trailing bytes) sets *err = (tag << 32) | (job + 1) and
// nothing is written out of bounds.

#define SEG 16384u

__device__ __forceinline__ bool gap_at(const u8* b, u64 e, u64* g) {
    u64 v = b[e] & 0x7f;
    u64 k = e;
    #pragma unroll
    for (int d = 0; d < 4; d++) {
        if (k == 0) break;
        u8 p = b[k - 1];
        if (!(p & 0x80)) break;
        v = (v << 7) | (u64)(p & 0x7f);
        k--;
    }
    *g = v;
    return !(k > 0 && (b[k - 1] & 0x80));
}

__device__ __forceinline__ void report(u64* err, u32 tag, u32 job) {
    atomicCAS((unsigned long long*)err, 0ull, ((unsigned long long)tag << 32) | (job + 1));
}

// Block-wide exclusive scan of (count, sum); returns totals in *tc, *ts.
__device__ __forceinline__ void scan2(u32 c, u64 s, u32* ec, u64* es, u32* tc, u64* ts) {
    __shared__ u32 wc[8];
    __shared__ u64 ws[8];
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 ic = c; u64 is = s;
    #pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        u32 xc = __shfl_up_sync(0xffffffffu, ic, o);
        u64 xs = __shfl_up_sync(0xffffffffu, is, o);
        if (lane >= (u32)o) { ic += xc; is += xs; }
    }
    if (lane == 31) { wc[warp] = ic; ws[warp] = is; }
    __syncthreads();
    u32 pc = 0; u64 ps = 0, allc = 0, alls = 0;
    #pragma unroll
    for (int w = 0; w < 8; w++) {
        if ((u32)w < warp) { pc += wc[w]; ps += ws[w]; }
        allc += wc[w]; alls += ws[w];
    }
    *ec = pc + ic - c;
    *es = ps + is - s;
    *tc = (u32)allc;
    *ts = alls;
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(256) tpde_varint_count(
        const Job* jobs, u32 njobs, u64* stats, u64* err, u32 tag) {
    __shared__ Job sj;
    __shared__ u32 sidx;
    if (threadIdx.x == 0) { const Job* p = find_job(jobs, njobs, blockIdx.x); sj = *p; sidx = (u32)(p - jobs); }
    __syncthreads();
    const Job j = sj;
    const u8* b = (const u8*)j.pos;
    const u64 L = j.base;
    const u64 s0 = (u64)(blockIdx.x - j.tile_start) * SEG;
    u32 c = 0; u64 s = 0; bool bad = false;
    for (u32 r = 0; r < SEG; r += 256) {
        u64 i = s0 + r + threadIdx.x;
        if (i < L && !(b[i] & 0x80)) {
            u64 g;
            bad |= !gap_at(b, i, &g);
            c++;
            s += g + 1;
        }
    }
    u32 ec, tc; u64 es, ts;
    scan2(c, s, &ec, &es, &tc, &ts);
    if (__syncthreads_or(bad) && threadIdx.x == 0) report(err, tag, sidx);
    if (threadIdx.x == 0) { stats[2 * (u64)blockIdx.x] = tc; stats[2 * (u64)blockIdx.x + 1] = ts; }
}

template <typename T>
__device__ __forceinline__ void put(const Job& j, u64 q, u64 p) {
    const int W = sizeof(T);
    const u8* vals = (const u8*)j.vals;
    T v = 0;
    #pragma unroll
    for (int k = 0; k < W; k++) v |= (T)vals[(u64)k * j.m + q] << (8 * (W - 1 - k));
    T* dst = (T*)j.dst;
    dst[p] = comb<T>(j.op, dst[p], v);
}

extern "C" __global__ void __launch_bounds__(256) tpde_varint_apply(
        const Job* jobs, u32 njobs, const u64* stats, u64* err, u32 tag) {
    __shared__ Job sj;
    __shared__ u32 sidx;
    if (threadIdx.x == 0) { const Job* p = find_job(jobs, njobs, blockIdx.x); sj = *p; sidx = (u32)(p - jobs); }
    __syncthreads();
    const Job j = sj;
    const u8* b = (const u8*)j.pos;
    const u64 L = j.base;
    const u32 seg = blockIdx.x - j.tile_start;
    // Totals of the job's earlier segments.
    u32 c = 0; u64 s = 0;
    for (u32 k = threadIdx.x; k < seg; k += 256) {
        c += (u32)stats[2 * (u64)(j.tile_start + k)];
        s += stats[2 * (u64)(j.tile_start + k) + 1];
    }
    u32 ec, cc; u64 es, cs;
    scan2(c, s, &ec, &es, &cc, &cs);
    bool bad = false;
    const u64 s0 = (u64)seg * SEG;
    const u64 s1 = s0 + SEG < L ? s0 + SEG : L;
    for (u64 r0 = s0; r0 < s1; r0 += 1024) {
        const u64 i0 = r0 + 4 * (u64)threadIdx.x;
        u8 by[4];
        #pragma unroll
        for (int q = 0; q < 4; q++) by[q] = (i0 + q < s1) ? b[i0 + q] : (u8)0x80;
        u64 g[4];
        u32 lc = 0; u64 ls = 0;
        #pragma unroll
        for (int q = 0; q < 4; q++) {
            g[q] = 0;
            if (!(by[q] & 0x80)) {
                bad |= !gap_at(b, i0 + q, &g[q]);
                lc++;
                ls += g[q] + 1;
            }
        }
        u32 xc, tc; u64 xs, ts;
        scan2(lc, ls, &xc, &xs, &tc, &ts);
        u64 idx = (u64)cc + xc;
        u64 pos = cs + xs;
        #pragma unroll
        for (int q = 0; q < 4; q++) {
            if (!(by[q] & 0x80)) {
                pos += g[q] + 1;
                u64 p = pos - 1;
                if (idx >= j.m || p >= j.n) {
                    bad = true;
                } else {
                    switch (j.width) {
                        case 1: put<u8>(j, idx, p); break;
                        case 2: put<u16>(j, idx, p); break;
                        case 4: put<u32>(j, idx, p); break;
                        default: put<u64>(j, idx, p); break;
                    }
                }
                idx++;
            }
        }
        cc += tc;
        cs += ts;
    }
    // The last segment checks the whole stream: m gaps, ending on a final byte.
    if (seg + 1 == j.tiles && threadIdx.x == 0) {
        if ((u64)cc != j.m || L == 0 || (b[L - 1] & 0x80)) bad = true;
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) report(err, tag, sidx);
}


// ---- entropy decoding on the device (phase 0) -------------------------------
// One group of G threads per chunk, thread l owning rANS state x_l (spec
// 5.6.4-5.6.5): G = 4 for 4-state planes (eight chunks per warp), G = 32
// for the 32-state planes of format 1.6 (one warp per chunk); one launch
// of tpde_entropy runs both. Symbol i belongs to lane i % G, so the group decodes G
// symbols per step; the lanes that renormalize take the next words in lane
// order (a ballot and a popcount), which is exactly the stream order of the
// sequential decoder. Planes decode in order (plane k's context is plane
// k - 1). Input layout: tpde_gpu::stage::fill_entropy. Errors set *err to
// (tag << 32) | 0x80000000 | reason << 24 | plane << 20 | (slot + 1):
// reason 1 a word needed past the end, 2 words left over, 3 a final state
// other than 2^16, 4 an invalid gap stream. Nothing outside the input,
// the job's device-only region and the base range is read or written.

struct EntPlane {
    u8 kind, ctx, scale, buckets, cval, p0, p1, p2;
    u32 x[4];        // the states of a 4-state plane
    u64 data, len, tables;
    u64 states;      // offset of a 32-state plane's states
    u64 p4;
};

__device__ __forceinline__ void ent_report(u64* err, u32 tag, u32 reason, u32 plane, u32 slot) {
    atomicCAS((unsigned long long*)err, 0ull,
              ((unsigned long long)tag << 32) | 0x80000000u | (reason << 24) | ((plane & 15u) << 20) | (slot + 1));
}

// G threads per job (4, or 32 for 32-state planes): G consecutive lanes
// of one warp, whose lanes gshift .. gshift + G - 1 are gmask. `block`
// counts the blocks of this group size.
template <u32 G>
__device__ __forceinline__ void entropy_group(const Job* jobs, u32 njobs, u32 block, u64* err, u32 tag) {
    const u32 g = (block * blockDim.x + threadIdx.x) / G;
    const u32 lane = threadIdx.x & (G - 1);
    if (g >= njobs) return; // the whole group leaves together
    const u32 gbits = (u32)((1ull << G) - 1);
    const u32 gshift = threadIdx.x & 31u & ~(G - 1);
    const u32 gmask = gbits << gshift;
    const Job j = jobs[g];
    const u8* in = (const u8*)j.vals;
    const u64 m = j.m, n = j.n;
    const u32 W = j.width;
    u8* out = (u8*)j.dst;
    u8* bctx = out + m * W;
    const EntPlane* pl = (const EntPlane*)(in + 16);
    // Base context (spec 5.7): byte W - 1 of the base element under each value.
    if (j.flags & 2) {
        const u8* base = (const u8*)j.base;
        u32 bad = 0;
        if (j.kind == 1) {
            for (u64 i = lane; i < m; i += G) bctx[i] = base ? base[i * W + W - 1] : (u8)0;
        } else if (j.kind == 2) {
            const u32* pos = (const u32*)j.pos;
            for (u64 i = lane; i < m; i += G) {
                u64 p = pos[i];
                if (p >= n) { bad = 1; p = 0; }
                bctx[i] = base ? base[p * W + W - 1] : (u8)0;
            }
        } else if (lane == 0) {
            // Gap bytes (spec 5.5), checked as the CPU reader checks them.
            const u8* b = (const u8*)j.pos;
            const u64 L = *(const u64*)in;
            u64 e = 0, next = 0, cnt = 0;
            while (e < L && !bad) {
                u64 v = 0; u32 sh = 0, len = 0; bool done = false;
                while (e < L && len < 5) {
                    u8 c = b[e++]; len++;
                    v |= (u64)(c & 0x7f) << sh; sh += 7;
                    if (!(c & 0x80)) { done = true; break; }
                }
                u64 p = next + v;
                if (!done || cnt >= m || p >= n) { bad = 1; break; }
                bctx[cnt++] = base ? base[p * W + W - 1] : (u8)0;
                next = p + 1;
            }
            if (cnt != m) bad = 1;
        }
        bad = __any_sync(gmask, bad);
        if (bad) {
            if (lane == 0) ent_report(err, tag, 4, 0, j.tile_start);
            return;
        }
        __syncwarp(gmask);
    }
    for (u32 k = 0; k < W; k++) {
        const EntPlane P = pl[k];
        u8* o = out + (u64)k * m;
        if (P.kind == 0) {
            const u8* src = in + P.data;
            if (((u64)o & 15) == 0 && (m & 15) == 0) {
                for (u64 i = (u64)lane * 16; i < m; i += 16 * G)
                    *(uint4*)(o + i) = *(const uint4*)(src + i);
            } else {
                for (u64 i = lane; i < m; i += G) o[i] = src[i];
            }
        } else if (P.kind == 1) {
            for (u64 i = lane; i < m; i += G) o[i] = P.cval;
        } else {
            const u8* ctx = P.ctx == 1 ? o - m : P.ctx == 2 ? bctx : (const u8*)0;
            const u8* bof = in + P.tables;
            const u8* tb = bof + 256;
            const u16* words = (const u16*)(in + P.data);
            const u64 nw = P.len >> 1;
            const u32 sc = P.scale, mask = (1u << sc) - 1, sh = sc - 8;
            u32 x = G == 4 ? P.x[lane & 3] : __ldg((const u32*)(in + P.states) + lane);
            u64 p = 0;
            u32 bad = 0;
            // The bucket's tables for symbol i: looked up one step ahead,
            // off the state's dependency chain (context -> bucket -> table).
            const u8* tcur = tb;
            if (ctx && lane < m) tcur = tb + (u32)__ldg(bof + ctx[lane]) * 1280u;
            for (u64 i0 = 0; i0 < m; i0 += G) {
                const u64 i = i0 + lane;
                const u8* tnext = tb;
                if (ctx && i + G < m) tnext = tb + (u32)__ldg(bof + ctx[i + G]) * 1280u;
                // The next G words, one per lane, fetched before they are
                // known to be needed (a renormalizing lane takes the one at
                // its rank among the lanes that renormalize).
                const u64 wq = p + lane;
                const u32 wv = wq < nw ? (u32)__ldg(words + wq) : 0u;
                bool need = false;
                if (i < m) {
                    const u32* tab = (const u32*)tcur;
                    const u32 slot = x & mask;
                    u32 s = __ldg(tcur + 1024 + (slot >> sh));
                    u32 e = __ldg(tab + s);
                    while ((e >> 16) <= slot && s < 255) { s++; e = __ldg(tab + s); }
                    o[i] = (u8)s;
                    const u32 st = e & 0xffffu;
                    x = ((e >> 16) - st) * (x >> sc) + (slot - st);
                    need = x < 65536u;
                }
                const u32 bal = (__ballot_sync(gmask, need) >> gshift) & gbits;
                const u32 rank = __popc(bal & ((1u << lane) - 1));
                const u32 w = __shfl_sync(gmask, wv, gshift + rank);
                if (need) {
                    if (p + rank < nw) x = (x << 16) | w;
                    else bad = 1;
                }
                p += __popc(bal);
                tcur = tnext;
            }
            const u32 trunc = __any_sync(gmask, bad);
            const u32 state = __any_sync(gmask, x != 65536u);
            if (trunc | (p != nw) | state) {
                if (lane == 0) ent_report(err, tag, trunc ? 1 : (p != nw) ? 2 : 3, k, j.tile_start);
                return;
            }
        }
        __syncwarp(gmask); // plane k is written before plane k + 1 reads it
    }
}

// Jobs 0 .. narrow - 1 have 4-state planes: the first blocks decode them,
// blockDim / 4 jobs a block; the blocks after decode the 32-state jobs
// narrow .. njobs - 1, blockDim / 32 a block (one warp each). One launch,
// so the two kinds overlap on the device.
extern "C" __global__ void __launch_bounds__(128) tpde_entropy(
        const Job* jobs, u32 njobs, u32 narrow, u64* err, u32 tag) {
    const u32 nb4 = (narrow + blockDim.x / 4 - 1) / (blockDim.x / 4);
    if (blockIdx.x < nb4) entropy_group<4>(jobs, narrow, blockIdx.x, err, tag);
    else entropy_group<32>(jobs + narrow, njobs - narrow, blockIdx.x - nb4, err, tag);
}


extern "C" __global__ void __launch_bounds__(256) tpde_sparse(const Job* jobs, u32 njobs) {
    __shared__ Job sj;
    if (threadIdx.x == 0) sj = *find_job(jobs, njobs, blockIdx.x);
    __syncthreads();
    const Job j = sj;
    const u64 tile = blockIdx.x - j.tile_start;
    switch (j.width) {
        case 1: scatter<u8>(j, tile); break;
        case 2: scatter<u16>(j, tile); break;
        case 4: scatter<u32>(j, tile); break;
        default: scatter<u64>(j, tile); break;
    }
}
"#;

/// The compiled kernels, loaded into one device's context.
#[derive(Debug)]
pub struct Kernels {
    phase1: CudaFunction,
    sparse: CudaFunction,
    varint_count: CudaFunction,
    varint_apply: CudaFunction,
    entropy: CudaFunction,
    /// Milliseconds NVRTC took (0 when the PTX came from the process cache).
    pub compile_ms: f64,
}

/// PTX by architecture option, compiled once per process.
static PTX: OnceLock<Mutex<HashMap<String, Ptx>>> = OnceLock::new();
/// Loaded kernels by device ordinal.
static LOADED: OnceLock<Mutex<HashMap<usize, Arc<Kernels>>>> = OnceLock::new();

/// The kernels for `ctx`'s device: compiled with NVRTC on first use in this
/// process (for the device's architecture, falling back to `compute_75` PTX
/// when this NVRTC does not know the device), then cached.
pub fn kernels_for(ctx: &Arc<CudaContext>) -> Result<Arc<Kernels>> {
    let loaded = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut loaded = loaded
        .lock()
        .map_err(|_| GpuError::Usage("kernel cache poisoned by a panic".into()))?;
    if let Some(k) = loaded.get(&ctx.ordinal()) {
        return Ok(k.clone());
    }
    crate::device::nvrtc_available()?;
    let (major, minor) = cuda("cuDeviceGetAttribute", ctx.compute_capability())?;
    let archs = [format!("compute_{major}{minor}"), "compute_75".to_owned()];
    let cache = PTX.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .map_err(|_| GpuError::Usage("kernel cache poisoned by a panic".into()))?;
    let mut compile_ms = 0.0;
    let mut ptx = None;
    let mut last_log = String::new();
    for arch in &archs {
        if let Some(p) = cache.get(arch) {
            ptx = Some(p.clone());
            break;
        }
        let t = std::time::Instant::now();
        // Bit-exact float semantics, spelled out rather than left to
        // NVRTC's defaults: the dequant product keeps subnormals (no flush
        // to zero), no fast math, no multiply-add contraction.
        let opts = CompileOptions {
            options: vec![format!("--gpu-architecture={arch}")],
            name: Some("tpde_apply.cu".into()),
            ftz: Some(false),
            prec_div: Some(true),
            prec_sqrt: Some(true),
            fmad: Some(false),
            use_fast_math: Some(false),
            ..Default::default()
        };
        match cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts) {
            Ok(p) => {
                compile_ms = t.elapsed().as_secs_f64() * 1e3;
                cache.insert(arch.clone(), p.clone());
                ptx = Some(p);
                break;
            }
            Err(CompileError::CompileError { log, .. }) => {
                last_log = log.to_string_lossy().into_owned();
            }
            Err(e) => last_log = e.to_string(),
        }
    }
    let ptx = ptx.ok_or(GpuError::Compile { log: last_log })?;
    let module = cuda("cuModuleLoadData", ctx.load_module(ptx))?;
    let k = Arc::new(Kernels {
        phase1: cuda("cuModuleGetFunction", module.load_function("tpde_phase1"))?,
        sparse: cuda("cuModuleGetFunction", module.load_function("tpde_sparse"))?,
        varint_count: cuda(
            "cuModuleGetFunction",
            module.load_function("tpde_varint_count"),
        )?,
        varint_apply: cuda(
            "cuModuleGetFunction",
            module.load_function("tpde_varint_apply"),
        )?,
        entropy: cuda("cuModuleGetFunction", module.load_function("tpde_entropy"))?,
        compile_ms,
    });
    loaded.insert(ctx.ordinal(), k.clone());
    Ok(k)
}

impl Kernels {
    /// Launches phase 1 over `njobs` descriptors at device address `table`
    /// covering `tiles` blocks.
    ///
    /// # Safety
    /// The table must be a valid descriptor table (as written by
    /// [`crate::plan::Batch::write_descriptors`]) in device memory whose
    /// addresses stay valid until the launch completes on `stream`.
    pub unsafe fn launch_phase1(
        &self,
        stream: &CudaStream,
        table: u64,
        njobs: u32,
        tiles: u32,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { launch(stream, &self.phase1, table, njobs, tiles) }
    }

    /// Launches the sparse phase; see [`Kernels::launch_phase1`].
    ///
    /// # Safety
    /// As for [`Kernels::launch_phase1`]; positions must lie inside their
    /// chunk (the staging code checks them while decoding).
    pub unsafe fn launch_sparse(
        &self,
        stream: &CudaStream,
        table: u64,
        njobs: u32,
        tiles: u32,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { launch(stream, &self.sparse, table, njobs, tiles) }
    }

    /// Launches both passes of the device position decoder over a phase-3
    /// table: `stats` is 16 bytes of device scratch per block, `err` one
    /// zeroed device `u64` that receives `(tag << 32) | (slot + 1)` of a job
    /// with an invalid positions stream.
    ///
    /// # Safety
    /// As for [`Kernels::launch_phase1`]; `stats` and `err` must be valid
    /// device memory of those sizes.
    // The arguments are the kernels' parameters, one for one.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn launch_varint(
        &self,
        stream: &CudaStream,
        table: u64,
        njobs: u32,
        tiles: u32,
        stats: u64,
        err: u64,
        tag: u32,
    ) -> Result<()> {
        if tiles == 0 || njobs == 0 {
            return Ok(());
        }
        let cfg = LaunchConfig {
            grid_dim: (tiles, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        for f in [&self.varint_count, &self.varint_apply] {
            let mut b = stream.launch_builder(f);
            b.arg(&table).arg(&njobs).arg(&stats).arg(&err).arg(&tag);
            // SAFETY: the caller guarantees the table, scratch and error
            // word are valid device memory for the launches.
            cuda("cuLaunchKernel", unsafe { b.launch(cfg) })?;
        }
        Ok(())
    }
}

impl Kernels {
    /// Launches the entropy decoder over a phase-0 table of `njobs`
    /// descriptors whose first `narrow` jobs have 4-state planes (one group
    /// of [`crate::plan::ENTROPY_GROUP`] threads each) and the rest 32-state
    /// planes (one warp of [`crate::plan::ENTROPY_GROUP_WIDE`] each); `err`
    /// is the zeroed device `u64` that receives a failing plane's code (see
    /// the kernel source), `tag` the batch index.
    ///
    /// # Safety
    /// As for [`Kernels::launch_phase1`]: every descriptor's entropy input,
    /// device-only region, positions and base range must be valid device
    /// memory until the launch completes, the input's tables must be the
    /// ones [`crate::stage`] builds (the kernel trusts their indices), and
    /// each job's planes must have the states its place says
    /// ([`crate::plan::Job::wide`]).
    pub unsafe fn launch_entropy(
        &self,
        stream: &CudaStream,
        table: u64,
        njobs: u32,
        narrow: u32,
        err: u64,
        tag: u32,
    ) -> Result<()> {
        if njobs == 0 {
            return Ok(());
        }
        let narrow = narrow.min(njobs);
        let threads = crate::plan::ENTROPY_THREADS;
        let blocks = narrow.div_ceil(threads / crate::plan::ENTROPY_GROUP)
            + (njobs - narrow).div_ceil(threads / crate::plan::ENTROPY_GROUP_WIDE);
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&self.entropy);
        b.arg(&table).arg(&njobs).arg(&narrow).arg(&err).arg(&tag);
        // SAFETY: forwarded to the caller.
        cuda("cuLaunchKernel", unsafe { b.launch(cfg) }).map(|_| ())
    }
}

unsafe fn launch(
    stream: &CudaStream,
    f: &CudaFunction,
    table: u64,
    njobs: u32,
    tiles: u32,
) -> Result<()> {
    if tiles == 0 || njobs == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig {
        grid_dim: (tiles, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = stream.launch_builder(f);
    b.arg(&table).arg(&njobs);
    // SAFETY: the caller guarantees the descriptor table and every address
    // in it are valid device memory for the launch.
    cuda("cuLaunchKernel", unsafe { b.launch(cfg) }).map(|_| ())
}

"""OpenCL C sources for the float32 GEMM kernels (row-major, C_MN = A_MK @ B_KN).

Three kernels, all taking ``(M, N, K, lda, ldb, ldc, A, B, C)``:

* ``naive``: one output per work-item, bounds-checked; the readable reference.
* ``local``: the classic local-memory tiled kernel, ``TILE`` x ``TILE`` work-groups staging ``TILE`` x
  ``TILE`` blocks of A and B in ``__local`` memory; the host zero-pads M, N and K to multiples of
  ``TILE`` (bounds checks in the loads made PoCL's version 2x slower). This is what a GPU wants.
* ``tiled``: register blocking. Each work-item keeps an ``RM`` x (``NV`` * ``VW``) block of C in ``RM * NV``
  ``floatVW`` registers and streams a row of B (``NV`` vector loads) and ``RM`` broadcast scalars of A per
  k. Work-groups are ``GROUP_ROWS`` work-items stacked along M, so they share one strip of B in cache.
  The host pads M to a multiple of ``RM`` and N to a multiple of ``NV * VW`` (zeros), K needs no padding.

Why ``tiled`` has no local memory: on PoCL's CPU device every value that lives across a ``barrier()`` is
kept in a per-work-item context array, and the compiled loop stores the accumulators to it on *every*
k iteration. Measured on this project's 2-core VM (PoCL 3.1, LLVM 15): a local-memory register-blocked
variant reached ~60 GFLOP/s, the same micro-kernel without barriers ~300 GFLOP/s. The accumulators are
written out as separate named variables (generated below) because LLVM did not fully unroll a
``float16 acc[RM][NV]`` array and left it in memory.
"""

from __future__ import annotations

NAIVE_SOURCE = r"""
__kernel void naive(const int M, const int N, const int K, const int lda, const int ldb, const int ldc,
                    __global const float *A, __global const float *B, __global float *C)
{
  const int j = get_global_id(0);
  const int i = get_global_id(1);
  if (i >= M || j >= N) return;
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc += A[i * lda + k] * B[k * ldb + j];
  C[i * ldc + j] = acc;
}
"""

LOCAL_SOURCE = r"""
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void local_tiled(const int M, const int N, const int K, const int lda, const int ldb, const int ldc,
                 __global const float *A, __global const float *B, __global float *C)
{
  /* M, N, K are multiples of TILE (the host pads with zeros): no bounds checks in the inner loops. */
  __local float As[TILE][TILE];
  __local float Bs[TILE][TILE];
  const int lj = get_local_id(0), li = get_local_id(1);
  const int j = get_group_id(0) * TILE + lj, i = get_group_id(1) * TILE + li;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    As[li][lj] = A[i * lda + k0 + lj];
    Bs[li][lj] = B[(k0 + li) * ldb + j];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 0; k < TILE; ++k) acc += As[li][k] * Bs[k][lj];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  C[i * ldc + j] = acc;
}
"""


def tiled_source(rows_per_item: int, vectors_per_item: int, vector_width: int) -> str:
    """Source of the register-blocked ``tiled`` kernel with the micro-tile unrolled into named registers."""
    rm, nv, vw = rows_per_item, vectors_per_item, vector_width
    if rm < 1 or nv < 1 or vw not in (1, 2, 4, 8, 16):
        raise ValueError(
            f"bad tiled micro-tile: rows_per_item={rm}, vectors_per_item={nv}, vector_width={vw}"
        )
    vtype = "float" if vw == 1 else f"float{vw}"
    load = (
        (lambda off: f"Bp[k * ldb + {off}]")
        if vw == 1
        else (lambda off: f"vload{vw}(0, Bp + k * ldb + {off})")
    )
    lines = [f"    const {vtype} b{v} = {load(v * vw)};" for v in range(nv)]
    for r in range(rm):
        lines.append(f"    {{ const {vtype} a = ({vtype})(Ap[{r} * lda + k]);")
        lines.extend(f"      c{r}_{v} = fma(a, b{v}, c{r}_{v});" for v in range(nv))
        lines.append("    }")
    decls = "\n".join(f"  {vtype} c{r}_{v} = ({vtype})(0.0f);" for r in range(rm) for v in range(nv))
    if vw == 1:
        stores = [f"  C[(i0 + {r}) * ldc + j0 + {v}] = c{r}_{v};" for r in range(rm) for v in range(nv)]
    else:
        stores = [
            f"  vstore{vw}(c{r}_{v}, 0, C + (i0 + {r}) * ldc + j0 + {v * vw});"
            for r in range(rm)
            for v in range(nv)
        ]
    body = "\n".join(lines)
    return f"""
__kernel void tiled(const int M, const int N, const int K, const int lda, const int ldb, const int ldc,
                    __global const float * restrict A, __global const float * restrict B,
                    __global float * restrict C)
{{
  /* M, N are multiples of {rm} and {nv * vw} (host pads); K is arbitrary. */
  const int j0 = get_global_id(0) * {nv * vw};
  const int i0 = get_global_id(1) * {rm};
  __global const float *Ap = A + i0 * lda;
  __global const float *Bp = B + j0;
{decls}
  for (int k = 0; k < K; ++k) {{
{body}
  }}
{chr(10).join(stores)}
}}
"""

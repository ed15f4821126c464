// SPDX-License-Identifier: Apache-2.0
/*
 * moe-router C ABI: MoE token-to-expert routing with replay, for CPU and CUDA.
 *
 * Semantics: docs/semantics.md (scores, group-limited top-k, weights, replay, backward, the
 * non-finite policy and replay rows of -1: sections 1-5; padding, counts, losses, token dropping:
 * section 6).
 * Every function returns a moe_status (0 = MOE_OK); moe_status_string() names a code and
 * moe_last_error_message() gives the detail of the calling thread's last failure.
 *
 * Memory spaces: a router created for MOE_BACKEND_CPU takes host pointers everywhere.
 * A router created for MOE_BACKEND_CUDA takes device pointers in moe_route/moe_route_backward
 * (launched on `stream`, a cudaStream_t, never synchronised) and host pointers in the *_host
 * variants, which stage through router-owned device buffers and synchronise.
 */
#ifndef MOE_ROUTER_H_
#define MOE_ROUTER_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moe_status {
  MOE_OK = 0,
  MOE_ERR_INVALID_ARGUMENT = 1, /* bad config, shape, dtype or null pointer */
  MOE_ERR_INVALID_REPLAY = 2,   /* replay/backward indices out of range or duplicated in a row */
  MOE_ERR_UNSUPPORTED = 3,      /* backend or feature not compiled in (e.g. no CUDA) */
  MOE_ERR_NO_DEVICE = 4,        /* CUDA compiled in, but no usable device */
  MOE_ERR_CUDA = 5,             /* a CUDA runtime call failed */
  MOE_ERR_OUT_OF_MEMORY = 6,
  MOE_ERR_INTERNAL = 7,
  MOE_ERR_NONFINITE = 8         /* non-finite policy ERROR: a logit the call reads is NaN or +-inf */
} moe_status;

typedef enum moe_backend { MOE_BACKEND_CPU = 1, MOE_BACKEND_CUDA = 2 } moe_backend;
typedef enum moe_dtype { MOE_DTYPE_F32 = 0, MOE_DTYPE_BF16 = 1, MOE_DTYPE_F16 = 2 } moe_dtype;
typedef enum moe_score_fn { MOE_SCORE_SOFTMAX = 0, MOE_SCORE_SIGMOID = 1, MOE_SCORE_SQRTSOFTPLUS = 2 } moe_score_fn;
/* Weight renormalisation (spec section 3). DEFAULT: on for sigmoid and sqrtsoftplus, off for softmax
 * pre; softmax post is normalised by construction and rejects OFF. k = 1 is never normalised. */
typedef enum moe_normalize { MOE_NORMALIZE_DEFAULT = 0, MOE_NORMALIZE_ON = 1, MOE_NORMALIZE_OFF = 2 } moe_normalize;
/* Group score from the routing scores R of a group (spec section 2): the sum of its top
 * floor(k / group_topk) values, of its top 2 values, or its largest value. */
typedef enum moe_group_score { MOE_GROUP_TOPK_SUM = 0, MOE_GROUP_TOP2_SUM = 1, MOE_GROUP_MAX = 2 } moe_group_score;
/* Rows whose read logits hold NaN or +-inf (spec section 2): weights may be NaN (PROPAGATE), weights
 * and logit gradients are 0 (ZERO), or the call is rejected naming the first such row (ERROR). */
typedef enum moe_nonfinite { MOE_NONFINITE_PROPAGATE = 0, MOE_NONFINITE_ZERO = 1, MOE_NONFINITE_ERROR = 2 } moe_nonfinite;
/* Replay rows that are all -1 (spec section 4): rejected, routed live, or replayed as 0..k-1.
 * A row mixing -1 and experts is always rejected. */
typedef enum moe_minus_one_rows {
  MOE_MINUS_ONE_REJECT = 0,
  MOE_MINUS_ONE_LIVE = 1,
  MOE_MINUS_ONE_ARANGE = 2
} moe_minus_one_rows;

/* Limits shared by every backend (the Java reference enforces the same ones). */
#define MOE_MAX_EXPERTS 4096
#define MOE_MAX_TOPK 64
#define MOE_MAX_GROUPS 64

/* Rejection reasons of moe_router_check_replay. */
#define MOE_REPLAY_OK 0
#define MOE_REPLAY_OUT_OF_RANGE 1
#define MOE_REPLAY_DUPLICATE 2
#define MOE_REPLAY_NONFINITE 3 /* non-finite policy ERROR: the row read a NaN or +-inf logit */

typedef struct moe_router moe_router; /* opaque */

/* Router configuration. num_groups = 0 (or 1 with group_topk 1) means no group limit.
 * Fields after expert_bias were added later: 0 is the spec default, so positional initialisers
 * that stop at expert_bias keep their meaning. */
typedef struct moe_router_config {
  int32_t num_experts;
  int32_t top_k;
  int32_t score_fn;    /* moe_score_fn */
  int32_t pre_softmax; /* softmax only: rank and weight by softmax over all experts */
  int32_t num_groups;
  int32_t group_topk;
  float scale;              /* multiplies the weights; 1 for none */
  const float* expert_bias; /* host [num_experts] or NULL; sigmoid, sqrtsoftplus or softmax pre; copied */
  int32_t normalize;        /* moe_normalize */
  int32_t group_score;      /* moe_group_score (with num_groups only) */
  int32_t nonfinite;        /* moe_nonfinite */
  int32_t minus_one_rows;   /* moe_minus_one_rows */
} moe_router_config;

const char* moe_status_string(int status);
/* Detail of the calling thread's most recent failure ("" when none). */
const char* moe_last_error_message(void);

/* Checks a configuration without creating anything. */
int moe_config_validate(const moe_router_config* config);

/* Number of CUDA devices visible; 0 when CUDA is not compiled in or none is present. */
int moe_cuda_device_count(void);
/* 1 when this library was compiled with CUDA kernels. */
int moe_cuda_compiled(void);

int moe_router_create(const moe_router_config* config, int backend, int device, moe_router** out);
/* NULL is accepted and ignored, so callers can close idempotently. */
int moe_router_destroy(moe_router* router);
/* Replaces the expert bias (host [num_experts], copied); for the aux-loss-free balancing update. A router
 * created without a bias ranks by the logits; once a bias is set it ranks by R = score + bias.
 * May run while other threads route on the router: every routing call uses one bias version for all
 * its rows, the one current when it started, and every call that starts after this returned uses the
 * new one; concurrent set_bias calls are serialised. CPU: calls read the bias without a lock, so this
 * returns once the calls that may still read the replaced version have ended (at most one call). CUDA: waits until the calls already running or enqueued on the router finish (one
 * device bias buffer, which captured graphs read at each launch: their launches are the caller's to
 * order against this). */
int moe_router_set_bias(moe_router* router, const float* host_bias);
/*
 * CPU backend: large calls run on one worker pool per process, shared by every router (the caller
 * thread works too; a call that finds the pool busy runs on its caller alone). Workers start at the
 * first parallel call. moe_set_num_threads sets the threads per call, caller included (0 = the CPUs
 * in this process's affinity mask, the default; 1 = no workers); it applies from the next parallel
 * call and may be called at any time. moe_get_num_threads returns the current setting.
 */
int moe_set_num_threads(int threads);
int moe_get_num_threads(void);
/* CPU backend, one router: 0 = use the shared pool (default), 1 = run on the calling thread only. */
int moe_router_set_threads(moe_router* router, int threads);

/*
 * Routes `tokens` rows of logits [tokens, E] (dtype moe_dtype, row-major) to out_idx [tokens, k]
 * and out_weights [tokens, k].
 * replay_idx [tokens, k] (optional): use these experts instead of selecting (spec section 4); rows
 * of -1 follow the router's minus_one_rows; out_idx may alias replay_idx.
 * replay_mask [tokens] (optional, with replay_idx): rows with mask 0 are routed live.
 * A live row reads its whole row of logits; a replayed row reads its k logits (softmax pre: the
 * whole row). Invalid replay rows, and under nonfinite ERROR a read NaN or +-inf
 * (MOE_ERR_NONFINITE, naming the first such row), are rejected before any output is written.
 * out_nonfinite_flags [tokens] (optional): 1 where a logit the row read was NaN or +-inf, else 0
 * (what moe_route_backward takes under ZERO; CUDA moe_route: device memory).
 * out_nonfinite_rows (optional): the number of such rows (CUDA moe_route: a device int64).
 * CUDA moe_route validates on the device: a rejected call (invalid replay row, or a non-finite read
 * under ERROR) writes nothing and is reported by moe_router_check_replay.
 */
int moe_route(moe_router* router, const void* logits, int dtype, int64_t tokens,
              const int32_t* replay_idx, const uint8_t* replay_mask,
              int32_t* out_idx, float* out_weights, uint8_t* out_nonfinite_flags,
              int64_t* out_nonfinite_rows, void* stream);
int moe_route_host(moe_router* router, const void* logits, int dtype, int64_t tokens,
                   const int32_t* replay_idx, const uint8_t* replay_mask,
                   int32_t* out_idx, float* out_weights, uint8_t* out_nonfinite_flags,
                   int64_t* out_nonfinite_rows);

/*
 * Backward of the weights (spec section 5): grad_logits [tokens, E] from grad_weights [tokens, k]
 * for the experts idx [tokens, k] that the forward used (live or replayed: its out_idx, never -1).
 * Every element of grad_logits is written.
 * nonfinite_flags [tokens]: the forward's out_nonfinite_flags (CUDA moe_route_backward: device memory).
 * Required under nonfinite ZERO (flagged rows get a zero gradient: a live row read the whole row,
 * which idx alone does not tell); ignored otherwise. Under ERROR a non-finite logit this call reads
 * rejects it (MOE_ERR_NONFINITE; CUDA moe_route_backward: through moe_router_check_replay).
 */
int moe_route_backward(moe_router* router, const void* logits, int dtype, int64_t tokens,
                       const int32_t* idx, const float* grad_weights, const uint8_t* nonfinite_flags,
                       float* grad_logits, void* stream);
int moe_route_backward_host(moe_router* router, const void* logits, int dtype, int64_t tokens,
                            const int32_t* idx, const float* grad_weights, const uint8_t* nonfinite_flags,
                            float* grad_logits);

/*
 * CUDA: replay validation (and, under non-finite policy ERROR, the search for non-finite reads)
 * happens on the device; a rejected call leaves its outputs untouched and records its first bad row
 * here. This call waits for every device-pointer call enqueued on this router before it (any thread,
 * any stream; launches of captured graphs must be synchronised by the caller first), then takes the
 * record in one atomic step.
 * Returns MOE_ERR_INVALID_REPLAY (bad_row and reason set: the lowest invalid row among the calls
 * rejected since the last check), else MOE_ERR_NONFINITE (the lowest row that read a NaN or +-inf,
 * reason MOE_REPLAY_NONFINITE; the message names the expert and the value), else MOE_OK. CPU routers
 * and the *_host variants report synchronously; check_replay then returns MOE_OK.
 * Device-pointer calls may run concurrently from several threads and streams and may be captured
 * into CUDA graphs (a captured replay/backward call reserves one of 1024 per-router verdict slots
 * until its graph and executables are destroyed). The router never keeps the caller's stream.
 */
int moe_router_check_replay(moe_router* router, int64_t* bad_row, int* reason);

/* Counts per expert of idx [tokens, k] (the selection actually used); counts [E] overwritten. */
int moe_tokens_per_expert(const int32_t* idx, int64_t tokens, int k, int experts, int32_t* counts);

/*
 * Training extras (spec section 6). Host memory; any router (a CUDA router runs them on the CPU; the
 * device-pointer forms of the section-6 calls follow moe_drop_tokens_host).
 *
 * Dense views of a selection idx [tokens, k] (rows must hold distinct experts in range), each
 * output optional: map [tokens, E] bytes (1 where selected), map_bits [tokens, ceil(E / 64)]
 * words (bit e % 64 of word e / 64), probs [tokens, E] (weights scattered, zeros elsewhere; needs w).
 */
int moe_dense_views(const int32_t* idx, const float* w, int64_t tokens, int k, int experts, uint8_t* map,
                    uint64_t* map_bits, float* probs);

/*
 * Aux-loss path over every row (moe_losses_host below is the general form, with padding): full-row aux
 * scores (softmax(L), or S / (sum S + 1e-20) with S the sigmoid or sqrtsoftplus score of the router),
 * the plain top-k of the logits (no groups, no bias; ties to the lower index), and the switch
 * load-balancing loss coeff * E * sum_i f_i * P_i with f_i = count_i / (tokens * k), P_i the mean aux
 * score of expert i.
 * Outputs optional except out_loss: scores [tokens, E], topk_map [tokens, E] bytes, counts [E].
 * grad_logits [tokens, E] (optional): d(loss)/d(logits) is ADDED to it (f is a constant, as in
 * Megatron), so it can accumulate onto the routing backward.
 */
int moe_aux_loss_host(moe_router* router, const void* logits, int dtype, int64_t tokens, float coeff,
                      float* out_scores, uint8_t* out_topk_map, int32_t* out_counts, float* out_loss,
                      float* grad_logits);

/* z-loss coeff * mean_t(logsumexp(L_t)^2); grad_logits (optional) gets its gradient ADDED. */
int moe_z_loss_host(moe_router* router, const void* logits, int dtype, int64_t tokens, float coeff, float* out_loss,
                    float* grad_logits);

/*
 * Spec section 6 with padding: valid tokens, counts, losses and token dropping. Host memory, any
 * router (a CUDA router runs them on the CPU); every argument is checked before an output is written.
 * A "valid" mask is uint8 [tokens], 1 = valid (v_t of the spec), NULL = every row valid; it comes from
 * moe_valid_tokens_host, which turns Megatron's padding mask (1 = padding) into it.
 */

/* Row layout of the sequences of the sequence aux loss: row t = s * B + b (SB, Megatron [seq, batch])
 * or t = b * Sq + s (BS, HF [batch, seq]). */
typedef enum moe_seq_layout { MOE_SEQ_SB = 0, MOE_SEQ_BS = 1 } moe_seq_layout;
/* Which routed tokens an expert keeps at capacity: the largest routing probs, or the first tokens. */
typedef enum moe_drop_policy { MOE_DROP_PROBS = 0, MOE_DROP_POSITION = 1 } moe_drop_policy;

/*
 * v_t: out_valid[t] = 1 when padding_mask[t] == 0 (padding_mask [tokens], 1 = padding, NULL = none)
 * and, under nonfinite ZERO, row t of logits [tokens, E] holds no NaN or +-inf (logits are read only
 * under ZERO and may be NULL otherwise), else 0. out_count (optional): N = the number of valid rows.
 */
int moe_valid_tokens_host(moe_router* router, const void* logits, int dtype, int64_t tokens,
                          const uint8_t* padding_mask, uint8_t* out_valid, int64_t* out_count);

/* Counts per expert over the valid rows (valid [tokens] or NULL = all) of a selection idx [tokens, k]
 * (tokens_per_expert / valid_tokens_per_expert without dropping); counts [E] overwritten. */
int moe_tokens_per_expert_valid(const int32_t* idx, const uint8_t* valid, int64_t tokens, int k, int experts,
                                int32_t* counts);
/* Column sums of a routing map [tokens, E] (0/1 bytes; the final map of moe_drop_tokens_host) over the
 * valid rows (valid or NULL); counts [E] overwritten. */
int moe_map_tokens_per_expert(const uint8_t* map, const uint8_t* valid, int64_t tokens, int experts,
                              int32_t* counts);

/* Which losses one moe_losses_host call computes (spec section 6). A coefficient of 0 turns a loss off;
 * coefficients must be finite and >= 0. */
typedef struct moe_loss_config {
  float aux_coeff;              /* switch load-balancing loss over this call's valid tokens */
  float seq_aux_coeff;          /* sequence aux loss: needs seq_length and seq_layout */
  float global_aux_coeff;       /* global aux loss: needs global_tokens and global_num_tokens */
  float z_coeff;                /* router z-loss */
  int64_t seq_length;           /* Sq >= 1 with seq_aux_coeff (tokens must be a multiple: B = tokens / Sq) */
  int32_t seq_layout;           /* moe_seq_layout */
  const double* global_tokens;  /* G [E] (finite, >= 0): aux-map counts over the ranks, averaged since the reset */
  double global_num_tokens;     /* Ng (finite, >= 0): this micro-batch's global token count; 0 gives a 0 loss */
} moe_loss_config;

/* Loss values (double; the sums behind them are double, merged in a fixed order). */
typedef struct moe_loss_values {
  double aux_loss;
  double seq_aux_loss;
  double global_aux_loss;
  double z_loss;
  int64_t valid_tokens; /* N: valid rows (NULL valid: every row; under ZERO rows with a non-finite logit are not) */
} moe_loss_values;

/*
 * The losses of `config` over logits [tokens, E] (spec section 6): aux scores A (softmax(L), or
 * S / (sum S + 1e-20) for sigmoid and sqrtsoftplus) and the plain top-k map M of L (the k largest
 * logits, ties to the lower index; no groups, bias, replay or dropping), both over the valid rows only
 * (valid [tokens] or NULL; under nonfinite ZERO a row with a non-finite logit is invalid whatever
 * valid says). With N = 0 every loss is 0 and no gradient is added.
 * out (required): the values. out_aux_counts [E] (optional): c, the M counts over the valid rows (what
 * the ranks sum into the global counts). out_aux_scores [tokens, E], out_aux_map [tokens, E] (optional):
 * A and M, 0 on invalid rows. grad_logits [tokens, E] (optional): the gradient of the sum of the losses
 * (upstream 1; c, G, Ng and N are constants) is ADDED to it, so it accumulates onto moe_route_backward's.
 * Sums are merged in an order that does not depend on the thread count.
 */
int moe_losses_host(moe_router* router, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
                    const moe_loss_config* config, moe_loss_values* out, int32_t* out_aux_counts,
                    float* out_aux_scores, uint8_t* out_aux_map, float* grad_logits);

/*
 * Token dropping (spec section 6) of a selection idx [tokens, k] (live or replayed, rows of distinct
 * experts in range) with its weights w [tokens, k] (the routing probs, scale included): each expert keeps
 * cap = ceil((tokens * k / E) * capacity_factor) tokens (float64; nothing is dropped when cap >= tokens),
 * by policy PROBS (the largest probs, a token not routed to it has prob 0; NaN below every number) or
 * POSITION (routed tokens first); ties go to the lower token index. pad_to_capacity: the final map is
 * the keep mask itself (every expert gets min(cap, tokens) rows, rows not routed there have prob 0).
 * Outputs, each optional: out_map [tokens, E] (the final map), out_probs [tokens, E] (w on the final
 * map, 0 elsewhere), out_kept [tokens, k] (1 where the entry is kept: the backward takes dw * kept),
 * out_kept_counts [E] (routed entries kept, <= cap), out_dropped (routed entries dropped).
 * capacity_factor must be finite and > 0. w may be NULL for POSITION without out_probs.
 */
int moe_drop_tokens_host(moe_router* router, const int32_t* idx, const float* w, int64_t tokens,
                         double capacity_factor, int policy, int pad_to_capacity, uint8_t* out_map, float* out_probs,
                         uint8_t* out_kept, int32_t* out_kept_counts, int64_t* out_dropped);

/*
 * Device-pointer forms of the section-6 calls (the moe_route convention): a CUDA router takes device
 * pointers and enqueues on `stream` (a cudaStream_t) without synchronising; a CPU router runs the host
 * calls above on host pointers (stream ignored). Every argument that the host can see is checked before
 * anything is enqueued (the host calls' rules and texts). Indices are checked on the device, as in
 * moe_route_backward: a call with an invalid row writes nothing and moe_router_check_replay reports it
 * (CPU routers: synchronously). No call allocates: the losses and the dropping take a caller-owned
 * device workspace of at least the bytes the *_workspace_size query gives (0 for a CPU router; 16-byte
 * aligned). Results are those of the host calls bit for bit (docs/cuda-training.md).
 */
/* moe_valid_tokens_host on the device: out_valid [tokens] bytes; out_count (optional) a device int64. */
int moe_valid_tokens(moe_router* router, const void* logits, int dtype, int64_t tokens, const uint8_t* padding_mask,
                     uint8_t* out_valid, int64_t* out_count, void* stream);
/* moe_tokens_per_expert_valid on the device, k and E from the router: idx [tokens, k], valid [tokens] or
 * NULL, counts [E] int32 overwritten. */
int moe_tokens_per_expert_device(moe_router* router, const int32_t* idx, const uint8_t* valid, int64_t tokens,
                                 int32_t* counts, void* stream);
/* moe_map_tokens_per_expert on the device, E from the router: map [tokens, E], counts [E] overwritten. */
int moe_map_tokens_per_expert_device(moe_router* router, const uint8_t* map, const uint8_t* valid, int64_t tokens,
                                     int32_t* counts, void* stream);
/* Workspace bytes of moe_losses for `tokens` rows and `config` (its coefficients and seq_length), with
 * aux_outputs != 0 when the call asks for out_aux_counts, out_aux_scores or out_aux_map. */
int moe_losses_workspace_size(moe_router* router, int64_t tokens, const moe_loss_config* config, int aux_outputs,
                              int64_t* out_bytes);
/*
 * moe_losses_host on the device: out is a device moe_loss_values; outputs and grad_logits as there, in
 * device memory. config is host memory; config->global_tokens (G [E] doubles) is DEVICE memory on a CUDA
 * router and is not read by the host, so its values are not checked there (finite and >= 0 is the
 * caller's to keep; a CPU router checks them as moe_losses_host does).
 */
int moe_losses(moe_router* router, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
               const moe_loss_config* config, moe_loss_values* out, int32_t* out_aux_counts, float* out_aux_scores,
               uint8_t* out_aux_map, float* grad_logits, void* workspace, int64_t workspace_bytes, void* stream);
/* Workspace bytes of moe_drop_tokens for `tokens` rows and `policy`. */
int moe_drop_tokens_workspace_size(moe_router* router, int64_t tokens, int policy, int64_t* out_bytes);
/* moe_drop_tokens_host on the device: every pointer device memory, out_dropped (optional) a device int64. */
int moe_drop_tokens(moe_router* router, const int32_t* idx, const float* w, int64_t tokens, double capacity_factor,
                    int policy, int pad_to_capacity, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                    int32_t* out_kept_counts, int64_t* out_dropped, void* workspace, int64_t workspace_bytes,
                    void* stream);

/*
 * Routing agreement of two selections a, b over `rows` rows of k experts (row r starts at
 * a + r * row_stride; order inside a row is ignored, rows are compared as expert sets).
 * out_rows_differ: rows whose sets differ. out_overlap_total: sum over rows of |A & B|.
 * row_differs [rows] (optional): 1 where the row's sets differ, else 0.
 * Host pointers; indices must lie in [0, experts) and be distinct within a row.
 */
int moe_routing_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride, int experts,
                          int64_t* out_rows_differ, int64_t* out_overlap_total, uint8_t* row_differs);
/* The same on device pointers (CUDA build): d_out2 = device int64[2] {rows_differ, overlap_total},
 * d_row_differs optional; asynchronous on `stream`. MOE_ERR_UNSUPPORTED without CUDA. */
int moe_routing_agreement_device(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride,
                                 int experts, int64_t* d_out2, uint8_t* d_row_differs, void* stream);

/*
 * Device memory and streams for bindings without a CUDA runtime of their own (the Java GPU tests
 * drive the device-pointer calls through them). MOE_ERR_UNSUPPORTED without CUDA.
 * moe_cuda_memcpy copies in any direction (unified addressing) and returns when the copy is done.
 */
int moe_cuda_malloc(int device, int64_t bytes, void** out);
int moe_cuda_free(void* ptr);
int moe_cuda_memcpy(void* dst, const void* src, int64_t bytes);
int moe_cuda_stream_create(int device, void** out); /* a non-blocking stream */
int moe_cuda_stream_destroy(void* stream);
int moe_cuda_stream_synchronize(void* stream);

#ifdef __cplusplus
}
#endif
#endif /* MOE_ROUTER_H_ */

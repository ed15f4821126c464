// SPDX-License-Identifier: Apache-2.0
// moe_check section "training": spec section 6 through the device-pointer entry points (moe_valid_tokens,
// moe_tokens_per_expert_device, moe_map_tokens_per_expert_device, moe_losses, moe_drop_tokens) against
// the CPU backend's host calls, bit for bit: valid rows and N, counts, every loss value, the aux counts,
// scores and map, the gradient ADDED onto a random one, the final map, probs, kept entries, kept counts
// and the dropped count. Random inputs with padding, ZERO rows, several sequences in both layouts,
// T over several work items and blocks, quantised weights (capacity ties); argument errors (nothing
// enqueued) and invalid idx rows (rejected on the device, outputs untouched). The goldens_v2 section-6
// cases go through the same functions in check_goldens.cu.
#include "check_support.h"

namespace check {

namespace {

std::vector<uint8_t> bytes_of(const DBuf<uint8_t>& b) { return b.down(); }

// Copies v into the front of b (buffers are one element longer, so that T = 0 allocates).
template <typename T>
void put(DBuf<T>& b, const std::vector<T>& v) {
  if (v.empty()) return;
  CK(cudaMemcpy(b.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  CK(cudaDeviceSynchronize());
}

// Equal bits, or both NaN (a GPU's NaN payload may differ from the CPU's).
bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_f(a[i], b[i])) return false;
  return true;
}

bool same_d(double a, double b) { return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

bool same_values(const moe_loss_values& a, const moe_loss_values& b) {
  return same_d(a.aux_loss, b.aux_loss) && same_d(a.seq_aux_loss, b.seq_aux_loss) &&
         same_d(a.global_aux_loss, b.global_aux_loss) && same_d(a.z_loss, b.z_loss) && a.valid_tokens == b.valid_tokens;
}

// A device workspace poisoned with NaN bytes, so that a read before a write shows.
struct Workspace {
  void* p = nullptr;
  int64_t bytes = 0;
  explicit Workspace(int64_t n) : bytes(n) {
    if (n > 0) {
      CK(cudaMalloc(&p, (size_t)n));
      CK(cudaMemset(p, 0xff, (size_t)n));
      CK(cudaDeviceSynchronize());
    }
  }
  ~Workspace() {
    if (p) cudaFree(p);
  }
};

}  // namespace

std::vector<uint8_t> check_valid_tokens(Routers& r, const std::string& tag, int dtype, int64_t T, int E,
                                        const std::vector<uint8_t>& logits, const uint8_t* d_logits,
                                        const std::vector<uint8_t>& padding, cudaStream_t stream) {
  std::vector<uint8_t> cv((size_t)T, 7);
  int64_t cn = -1;
  MK(moe_valid_tokens(r.cpu, logits.data(), dtype, T, padding.empty() ? nullptr : padding.data(), cv.data(), &cn,
                      nullptr));
  DBuf<uint8_t> d_pad((size_t)T + 1), d_valid((size_t)T + 1);
  DBuf<int64_t> d_n(1);
  put(d_pad, padding);
  d_valid.poison();
  d_n.poison();
  MK(moe_valid_tokens(r.gpu, d_logits, dtype, T, padding.empty() ? nullptr : d_pad.p, d_valid.p, d_n.p, stream));
  CK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> gv = bytes_of(d_valid);
  gv.resize((size_t)T);
  ++g_checks;
  if (gv != cv || d_n.down()[0] != cn)
    failf("%s valid tokens: device N %lld, host N %lld, rows %s", tag.c_str(), (long long)d_n.down()[0],
          (long long)cn, gv == cv ? "equal" : "differ");
  (void)E;
  return cv;
}

std::vector<int32_t> check_counts(Routers& r, const std::string& tag, int64_t T, int k, int E,
                                  const std::vector<int32_t>& idx, const std::vector<uint8_t>& valid,
                                  cudaStream_t stream) {
  std::vector<int32_t> ci((size_t)E, -5), cm((size_t)E, -5);
  const uint8_t* hv = valid.empty() ? nullptr : valid.data();
  MK(moe_tokens_per_expert_device(r.cpu, idx.data(), hv, T, ci.data(), nullptr));
  std::vector<uint8_t> map((size_t)T * E, 0);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) map[(size_t)t * E + idx[(size_t)t * k + j]] = (uint8_t)(1 + (t + j) % 3);  // nonzero
  MK(moe_map_tokens_per_expert_device(r.cpu, map.data(), hv, T, cm.data(), nullptr));
  DBuf<int32_t> d_idx(idx.size() + 1), d_counts((size_t)E);
  DBuf<uint8_t> d_valid((size_t)T + 1), d_map(map.size() + 1);
  put(d_idx, idx);
  put(d_valid, valid);
  put(d_map, map);
  const uint8_t* dv = valid.empty() ? nullptr : d_valid.p;
  d_counts.poison();
  MK(moe_tokens_per_expert_device(r.gpu, d_idx.p, dv, T, d_counts.p, stream));
  CK(cudaStreamSynchronize(stream));
  const std::vector<int32_t> gi = d_counts.down();
  d_counts.poison();
  MK(moe_map_tokens_per_expert_device(r.gpu, d_map.p, dv, T, d_counts.p, stream));
  CK(cudaStreamSynchronize(stream));
  const std::vector<int32_t> gm = d_counts.down();
  g_checks += 2;
  if (gi != ci) failf("%s tokens per expert (idx): device and host counts differ", tag.c_str());
  if (gm != cm || cm != ci) failf("%s tokens per expert (map): device, host or idx counts differ", tag.c_str());
  if (moe_router_check_replay(r.gpu, nullptr, nullptr) != MOE_OK)
    failf("%s tokens per expert: valid rows rejected: %s", tag.c_str(), moe_last_error_message());
  return ci;
}

LossResult check_losses(Routers& r, const std::string& tag, int dtype, int64_t T, int E,
                        const std::vector<uint8_t>& logits, const uint8_t* d_logits, const std::vector<uint8_t>& valid,
                        const moe_loss_config& config, bool outputs, const std::vector<float>& grad0,
                        cudaStream_t stream) {
  LossResult c;
  c.counts.assign((size_t)E, -3);
  c.scores.assign((size_t)T * E, -3.0f);
  c.map.assign((size_t)T * E, 9);
  c.grad = grad0;
  const uint8_t* hv = valid.empty() ? nullptr : valid.data();
  c.status = moe_losses(r.cpu, logits.data(), dtype, T, hv, &config, &c.values, outputs ? c.counts.data() : nullptr,
                        outputs ? c.scores.data() : nullptr, outputs ? c.map.data() : nullptr,
                        grad0.empty() ? nullptr : c.grad.data(), nullptr, 0, nullptr);
  if (c.status != MOE_OK) {
    failf("%s losses: host call failed: %s", tag.c_str(), moe_last_error_message());
    return c;
  }
  int64_t need = -1;
  MK(moe_losses_workspace_size(r.gpu, T, &config, outputs, &need));
  Workspace ws(need);
  DBuf<uint8_t> d_valid((size_t)T + 1), d_map((size_t)T * E + 1);
  DBuf<float> d_scores((size_t)T * E + 1), d_grad((size_t)T * E + 1);
  DBuf<int32_t> d_counts((size_t)E);
  DBuf<moe_loss_values> d_out(1);
  DBuf<double> d_g((size_t)E);
  put(d_valid, valid);
  d_map.poison();
  d_scores.poison();
  d_counts.poison();
  d_out.poison();
  put(d_grad, grad0);
  moe_loss_config dc = config;
  if (config.global_tokens) {
    d_g.up(config.global_tokens);
    dc.global_tokens = d_g.p;
  }
  MK(moe_losses(r.gpu, d_logits, dtype, T, valid.empty() ? nullptr : d_valid.p, &dc, d_out.p,
                outputs ? d_counts.p : nullptr, outputs ? d_scores.p : nullptr, outputs ? d_map.p : nullptr,
                grad0.empty() ? nullptr : d_grad.p, ws.p, ws.bytes, stream));
  CK(cudaStreamSynchronize(stream));
  const moe_loss_values gv = d_out.down()[0];
  ++g_checks;
  if (!same_values(gv, c.values))
    failf("%s losses: device (%.17g, %.17g, %.17g, %.17g, N %lld) host (%.17g, %.17g, %.17g, %.17g, N %lld)",
          tag.c_str(), gv.aux_loss, gv.seq_aux_loss, gv.global_aux_loss, gv.z_loss, (long long)gv.valid_tokens,
          c.values.aux_loss, c.values.seq_aux_loss, c.values.global_aux_loss, c.values.z_loss,
          (long long)c.values.valid_tokens);
  if (outputs) {
    std::vector<float> gs = d_scores.down();
    std::vector<uint8_t> gm = d_map.down();
    gs.resize(c.scores.size());
    gm.resize(c.map.size());
    ++g_checks;
    if (d_counts.down() != c.counts || !same_floats(gs, c.scores) || gm != c.map)
      failf("%s losses: aux counts, scores or map differ", tag.c_str());
  }
  if (!grad0.empty()) {
    std::vector<float> gg = d_grad.down();
    gg.resize(c.grad.size());
    compare_grad(tag + " loss gradients", c.grad, gg);
  }
  return c;
}

DropResult check_drop(Routers& r, const std::string& tag, int64_t T, int k, int E, const std::vector<int32_t>& idx,
                      const std::vector<float>& w, double cf, int policy, int pad, cudaStream_t stream) {
  DropResult c;
  c.map.assign((size_t)T * E, 9);
  c.probs.assign((size_t)T * E, -2.0f);
  c.kept.assign((size_t)T * k, 9);
  c.kept_counts.assign((size_t)E, -2);
  c.status = moe_drop_tokens(r.cpu, idx.data(), w.data(), T, cf, policy, pad, c.map.data(), c.probs.data(),
                             c.kept.data(), c.kept_counts.data(), &c.dropped, nullptr, 0, nullptr);
  if (c.status != MOE_OK) {
    failf("%s drop: host call failed: %s", tag.c_str(), moe_last_error_message());
    return c;
  }
  int64_t need = -1;
  MK(moe_drop_tokens_workspace_size(r.gpu, T, policy, &need));
  Workspace ws(need);
  DBuf<int32_t> d_idx(idx.size() + 1), d_counts((size_t)E);
  DBuf<float> d_w(w.size() + 1), d_probs((size_t)T * E + 1);
  DBuf<uint8_t> d_map((size_t)T * E + 1), d_kept((size_t)T * k + 1);
  DBuf<int64_t> d_dropped(1);
  put(d_idx, idx);
  put(d_w, w);
  d_probs.poison();
  d_map.poison();
  d_kept.poison();
  d_counts.poison();
  d_dropped.poison();
  MK(moe_drop_tokens(r.gpu, d_idx.p, d_w.p, T, cf, policy, pad, d_map.p, d_probs.p, d_kept.p, d_counts.p,
                     d_dropped.p, ws.p, ws.bytes, stream));
  CK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> gm = d_map.down(), gk = d_kept.down();
  std::vector<float> gp = d_probs.down();
  gm.resize(c.map.size());
  gk.resize(c.kept.size());
  gp.resize(c.probs.size());
  ++g_checks;
  if (gm != c.map || gk != c.kept || !same_floats(gp, c.probs) || d_counts.down() != c.kept_counts ||
      d_dropped.down()[0] != c.dropped)
    failf("%s drop (cf %g, %s%s): device and host differ (map %d, kept %d, probs %d, counts %d, dropped %lld/%lld)",
          tag.c_str(), cf, policy == MOE_DROP_PROBS ? "probs" : "position", pad ? ", pad" : "", (int)(gm == c.map),
          (int)(gk == c.kept), (int)same_floats(gp, c.probs), (int)(d_counts.down() == c.kept_counts),
          (long long)d_dropped.down()[0], (long long)c.dropped);
  if (moe_router_check_replay(r.gpu, nullptr, nullptr) != MOE_OK)
    failf("%s drop: valid rows rejected: %s", tag.c_str(), moe_last_error_message());
  return c;
}

namespace {

// Random logits (NaN / inf rows in mode 3), padding, several sequences, every loss, every drop option.
void check_training_case(const Config& cfg, int dtype, int64_t T, int mode, std::mt19937_64& rng,
                         cudaStream_t stream) {
  Routers r(cfg, rng);
  const int E = cfg.E, k = cfg.k;
  const std::string tag = label(cfg, dtype, T, mode, "training");
  const std::vector<uint8_t> logits = make_logits(rng, T, E, dtype, mode);
  DBuf<uint8_t> d_logits(logits.size() + 1);
  put(d_logits, logits);
  std::vector<uint8_t> padding((size_t)T);
  for (auto& p : padding) p = rng() % 4 == 0;
  const std::vector<uint8_t> valid = check_valid_tokens(r, tag, dtype, T, E, logits, d_logits.p, padding, stream);
  check_valid_tokens(r, tag + " (no padding)", dtype, T, E, logits, d_logits.p, {}, stream);
  // the routing the counts and the dropping take
  std::vector<int32_t> idx((size_t)T * k);
  std::vector<float> w((size_t)T * k);
  MK(moe_route(r.cpu, logits.data(), dtype, T, nullptr, nullptr, idx.data(), w.data(), nullptr, nullptr, nullptr));
  check_counts(r, tag, T, k, E, idx, valid, stream);
  check_counts(r, tag + " (all valid)", T, k, E, idx, {}, stream);
  // losses: each alone (the goldens' per-loss gradients) and all together, with and without outputs
  std::vector<double> G((size_t)E);
  for (auto& g : G) g = (double)(rng() % 50);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> grad0((size_t)T * E);
  for (auto& g : grad0) g = nd(rng);
  int64_t seq = 1;
  for (int64_t s : {(int64_t)300, (int64_t)37, (int64_t)4, (int64_t)2})
    if (T % s == 0 && s < T) {
      seq = s;
      break;
    }
  for (int which = 0; which < 6; ++which) {
    moe_loss_config c{};
    if (which == 0 || which == 4) c.aux_coeff = 0.01f;
    if (which == 1 || which == 4 || which == 5) {
      c.seq_aux_coeff = 0.001f;
      c.seq_length = which == 5 ? 1 : seq;  // set 5: one work item per row, T items merged in order
      c.seq_layout = (which + (int)T) % 2 ? MOE_SEQ_BS : MOE_SEQ_SB;
    }
    if (which == 2 || which == 4) {
      c.global_aux_coeff = 0.003f;
      c.global_tokens = G.data();
      c.global_num_tokens = which == 4 && T % 2 ? 0.0 : (double)T * 3;
    }
    if (which == 3 || which == 4 || which == 5) c.z_coeff = 0.001f;
    const std::string what = tag + " loss set " + std::to_string(which);
    check_losses(r, what, dtype, T, E, logits, d_logits.p, which == 5 ? std::vector<uint8_t>() : valid, c,
                 which >= 4, grad0, stream);
    if (which == 4) check_losses(r, what + " (no gradient)", dtype, T, E, logits, d_logits.p, valid, c, false, {}, stream);
  }
  // dropping: weights quantised to a few values (and some 0, negative, NaN) so that capacities split ties
  std::vector<float> wq = w;
  for (size_t i = 0; i < wq.size(); ++i) {
    const unsigned u = (unsigned)(rng() % 16);
    wq[i] = u < 10 ? (float)(u % 4) * 0.25f : u < 12 ? 0.0f : u < 13 ? -0.5f : u < 14 ? -0.0f : u < 15 ? NAN : w[i];
  }
  for (double cf : {0.3, 1.0, 1.7, 100.0})
    for (int policy : {MOE_DROP_PROBS, MOE_DROP_POSITION})
      for (int pad = 0; pad < 2; ++pad) {
        check_drop(r, tag, T, k, E, idx, w, cf, policy, pad, stream);
        check_drop(r, tag + " (ties)", T, k, E, idx, wq, cf, policy, pad, stream);
      }
}

// Argument errors: rejected before anything is enqueued, with the host call's texts; invalid idx rows:
// rejected on the device through moe_router_check_replay, outputs untouched.
void check_training_errors(const Config& cfg, cudaStream_t stream) {
  std::mt19937_64 rng(5);
  Routers r(cfg, rng);
  const int E = cfg.E, k = cfg.k;
  const int64_t T = 40;
  std::vector<int32_t> idx((size_t)T * k);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) idx[(size_t)t * k + j] = (int)((t + j) % E);
  DBuf<int32_t> d_idx(idx.size()), d_counts((size_t)E);
  DBuf<float> d_w(idx.size()), d_logits((size_t)T * E);
  DBuf<uint8_t> d_map((size_t)T * E);
  DBuf<moe_loss_values> d_out(1);
  d_idx.up(idx.data());
  std::vector<float> ones(idx.size(), 0.5f);
  d_w.up(ones.data());
  int64_t need = 0;
  moe_loss_config c{};
  c.aux_coeff = 0.01f;
  MK(moe_losses_workspace_size(r.gpu, T, &c, 0, &need));
  Workspace ws(need);
  auto expect = [&](const char* what, int st, int want, const char* text) {
    ++g_checks;
    if (st != want || !strstr(moe_last_error_message(), text))
      failf("%s %s: status %d (%s), expected %d with '%s'", cfg.name, what, st, moe_last_error_message(), want, text);
  };
  expect("small workspace",
         moe_losses(r.gpu, d_logits.p, MOE_DTYPE_F32, T, nullptr, &c, d_out.p, nullptr, nullptr, nullptr, nullptr,
                    ws.p, need - 1, stream),
         MOE_ERR_INVALID_ARGUMENT, "too small");
  expect("null workspace",
         moe_losses(r.gpu, d_logits.p, MOE_DTYPE_F32, T, nullptr, &c, d_out.p, nullptr, nullptr, nullptr, nullptr,
                    nullptr, need, stream),
         MOE_ERR_INVALID_ARGUMENT, "workspace must not be null");
  expect("misaligned workspace",
         moe_losses(r.gpu, d_logits.p, MOE_DTYPE_F32, T, nullptr, &c, d_out.p, nullptr, nullptr, nullptr, nullptr,
                    static_cast<char*>(ws.p) + 4, need, stream),
         MOE_ERR_INVALID_ARGUMENT, "16-byte aligned");
  moe_loss_config bad = c;
  bad.z_coeff = -1.0f;
  expect("negative coefficient",
         moe_losses(r.gpu, d_logits.p, MOE_DTYPE_F32, T, nullptr, &bad, d_out.p, nullptr, nullptr, nullptr, nullptr,
                    ws.p, need, stream),
         MOE_ERR_INVALID_ARGUMENT, "z-loss coefficient must be finite and >= 0");
  bad = c;
  bad.seq_aux_coeff = 1.0f;
  bad.seq_length = 7;
  expect("seq length", moe_losses_workspace_size(r.gpu, T, &bad, 0, &need), MOE_ERR_INVALID_ARGUMENT,
         "must be a multiple of the seq length");
  expect("unknown dtype",
         moe_losses(r.gpu, d_logits.p, 9, T, nullptr, &c, d_out.p, nullptr, nullptr, nullptr, nullptr, ws.p, need,
                    stream),
         MOE_ERR_INVALID_ARGUMENT, "unknown dtype 9");
  expect("valid tokens without output", moe_valid_tokens(r.gpu, d_logits.p, MOE_DTYPE_F32, T, nullptr, nullptr, nullptr, stream),
         MOE_ERR_INVALID_ARGUMENT, "out_valid must not be null");
  expect("counts without output", moe_tokens_per_expert_device(r.gpu, d_idx.p, nullptr, T, nullptr, stream),
         MOE_ERR_INVALID_ARGUMENT, "tokens_per_expert: bad arguments");
  int64_t dneed = 0;
  MK(moe_drop_tokens_workspace_size(r.gpu, T, MOE_DROP_PROBS, &dneed));
  Workspace dws(dneed);
  expect("capacity factor",
         moe_drop_tokens(r.gpu, d_idx.p, d_w.p, T, 0.0, MOE_DROP_PROBS, 0, d_map.p, nullptr, nullptr, nullptr, nullptr,
                         dws.p, dws.bytes, stream),
         MOE_ERR_INVALID_ARGUMENT, "capacity factor must be finite and > 0");
  expect("policy",
         moe_drop_tokens(r.gpu, d_idx.p, d_w.p, T, 1.0, 5, 0, d_map.p, nullptr, nullptr, nullptr, nullptr, dws.p,
                         dws.bytes, stream),
         MOE_ERR_INVALID_ARGUMENT, "unknown drop policy 5");
  expect("probs without weights",
         moe_drop_tokens(r.gpu, d_idx.p, nullptr, T, 1.0, MOE_DROP_PROBS, 0, d_map.p, nullptr, nullptr, nullptr,
                         nullptr, dws.p, dws.bytes, stream),
         MOE_ERR_INVALID_ARGUMENT, "the weights are needed");
  expect("drop workspace",
         moe_drop_tokens(r.gpu, d_idx.p, d_w.p, T, 1.0, MOE_DROP_PROBS, 0, d_map.p, nullptr, nullptr, nullptr, nullptr,
                         dws.p, dws.bytes - 1, stream),
         MOE_ERR_INVALID_ARGUMENT, "too small");
  CK(cudaStreamSynchronize(stream));
  // Invalid rows: out of range in row 17 and a duplicate in row 23; the lowest is reported, nothing written.
  for (int kind = 0; kind < 2; ++kind) {
    std::vector<int32_t> b = idx;
    if (kind == 0) b[17 * k] = E;
    if (k > 1) b[23 * k + 1] = b[23 * k];
    if (kind == 1 && k == 1) b[23 * k] = -1;
    const int64_t want_row = kind == 0 ? 17 : 23;
    d_idx.up(b.data());
    d_counts.poison();
    d_map.poison();
    MK(moe_tokens_per_expert_device(r.gpu, d_idx.p, nullptr, T, d_counts.p, stream));
    int64_t row = -1;
    int reason = 0;
    int st = moe_router_check_replay(r.gpu, &row, &reason);
    ++g_checks;
    if (st != MOE_ERR_INVALID_REPLAY || row != want_row || !all_bits(d_counts.down(), 0xff))
      failf("%s counts of invalid rows: status %d row %lld (expected %lld), counts untouched %d", cfg.name, st,
            (long long)row, (long long)want_row, (int)all_bits(d_counts.down(), 0xff));
    MK(moe_drop_tokens(r.gpu, d_idx.p, d_w.p, T, 0.5, MOE_DROP_PROBS, 1, d_map.p, nullptr, nullptr, d_counts.p,
                       nullptr, dws.p, dws.bytes, stream));
    st = moe_router_check_replay(r.gpu, &row, &reason);
    ++g_checks;
    if (st != MOE_ERR_INVALID_REPLAY || row != want_row || !all_bits(d_counts.down(), 0xff) ||
        !all_bits(d_map.down(), 0xff))
      failf("%s drop of invalid rows: status %d row %lld (expected %lld), outputs untouched %d", cfg.name, st,
            (long long)row, (long long)want_row, (int)(all_bits(d_counts.down(), 0xff) && all_bits(d_map.down(), 0xff)));
    // the CPU router's device-pointer form rejects synchronously with the host call's text
    const int cst = moe_drop_tokens(r.cpu, b.data(), ones.data(), T, 0.5, MOE_DROP_PROBS, 0, nullptr, nullptr,
                                    nullptr, nullptr, nullptr, nullptr, 0, nullptr);
    ++g_checks;
    if (cst != MOE_ERR_INVALID_REPLAY || message_row(moe_last_error_message()) != want_row)
      failf("%s CPU router drop of invalid rows: status %d (%s)", cfg.name, cst, moe_last_error_message());
  }
}

}  // namespace

void run_training(cudaStream_t stream, bool quick) {
  const Config configs[] = {
      {"train_softmax_E8_k2", 8, 2, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"train_sigmoid_bias_E64_k6", 64, 6, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, true},
      with_options({"train_sqrtsoftplus_zero_E33_k5", 33, 5, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_ZERO, MOE_MINUS_ONE_REJECT),
      with_options({"train_softmax_pre_zero_E96_k8", 96, 8, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_ZERO, MOE_MINUS_ONE_REJECT),
      {"train_sigmoid_k1_E16", 16, 1, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"train_softmax_E600_k40", 600, 40, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
  };
  std::mt19937_64 rng(4242);
  for (const Config& c : configs) {
    const int before = g_failures;
    // T = 0, one row, a partial work item, several work items (and grid-stride turns); NaN/inf rows (mode 3).
    const int64_t Ts_quick[] = {0, 1, 37, 600};
    const int64_t Ts_full[] = {0, 1, 37, 600, 2600};
    for (int dtype = 0; dtype < 3; ++dtype)
      for (int64_t T : quick ? std::vector<int64_t>(std::begin(Ts_quick), std::end(Ts_quick))
                             : std::vector<int64_t>(std::begin(Ts_full), std::end(Ts_full))) {
        if (c.E >= 512 && T > 600) continue;
        if (quick && dtype != 0 && T > 37 && c.E >= 512) continue;
        check_training_case(c, dtype, T, (dtype + (int)T) % 2 ? 3 : dtype == 0 ? 2 : 0, rng, stream);  // 2: wide logits, aux scores over many exponents (merge order shows)
      }
    check_training_errors(c, stream);
    printf("%-36s %s\n", c.name, g_failures == before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
}

}  // namespace check

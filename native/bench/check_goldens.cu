// SPDX-License-Identifier: Apache-2.0
// moe_check sections "goldens" and "edges": the float64 reference cases (java/src/test/goldens and
// goldens_v2, or ../shared copies) on live, replay and backward in fp32/bf16/fp16 through the
// device-pointer and host-staged paths, and edge inputs (T = 0, signed zeros, NaN and infinite rows,
// subnormals, huge values, E = 1, 3, 513, 2048, 4096, k = E, 64 groups, every routing option).
// CUDA must equal the CPU backend bit for bit; where the dtype holds the golden's inputs exactly it
// must also match the golden (indices exact; the v1 format's elementwise tolerance, the v2 format's
// 1e-5 norm-relative one; v2 row flags exact; ERROR cases rejected naming the expected rows).
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "check_support.h"

namespace check {
namespace {

// ------------------------------------------------------------------------------ .npy and config.json
struct Npy {
  std::string dtype;  // "<f4", "<f8", "<i4", "|u1"
  std::vector<size_t> shape;
  std::vector<char> data;
  size_t count() const {
    size_t n = 1;
    for (size_t d : shape) n *= d;
    return n;
  }
};

bool read_file(const std::string& path, std::string* out) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[65536];
  size_t n;
  out->clear();
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  fclose(f);
  return true;
}

bool read_npy(const std::string& path, Npy* a, std::string* err) {
  std::string s;
  if (!read_file(path, &s)) return *err = "cannot read " + path, false;
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0) return *err = path + ": not a .npy file", false;
  const int major = (unsigned char)s[6];
  size_t hlen, off;
  if (major == 1) {
    hlen = (unsigned char)s[8] | ((size_t)(unsigned char)s[9] << 8);
    off = 10;
  } else {
    hlen = (unsigned char)s[8] | ((size_t)(unsigned char)s[9] << 8) | ((size_t)(unsigned char)s[10] << 16) |
           ((size_t)(unsigned char)s[11] << 24);
    off = 12;
  }
  const std::string h = s.substr(off, hlen);
  auto field = [&](const char* key) {
    size_t p = h.find(key);
    return p == std::string::npos ? std::string() : h.substr(p + strlen(key));
  };
  std::string d = field("'descr': '");
  a->dtype = d.substr(0, d.find('\''));
  if (field("'fortran_order': ").rfind("False", 0) != 0) return *err = path + ": Fortran order", false;
  std::string sh = field("'shape': (");
  sh = sh.substr(0, sh.find(')'));
  a->shape.clear();
  for (size_t p = 0; p < sh.size();) {
    size_t q = sh.find(',', p);
    std::string t = sh.substr(p, q == std::string::npos ? std::string::npos : q - p);
    if (t.find_first_not_of(" ") != std::string::npos) a->shape.push_back(strtoull(t.c_str(), nullptr, 10));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  const size_t esz = a->dtype == "<f8" ? 8 : a->dtype == "|u1" ? 1 : 4;
  if (a->dtype != "<f4" && a->dtype != "<f8" && a->dtype != "<i4" && a->dtype != "|u1")
    return *err = path + ": dtype " + a->dtype, false;
  if (s.size() < off + hlen + a->count() * esz) return *err = path + ": truncated", false;
  a->data.assign(s.begin() + off + hlen, s.begin() + off + hlen + a->count() * esz);
  return true;
}

template <typename T>
std::vector<T> as(const Npy& a) {
  std::vector<T> v(a.count());
  for (size_t i = 0; i < v.size(); ++i) {
    if (a.dtype == "<f8") {
      double d;
      memcpy(&d, &a.data[i * 8], 8);
      v[i] = (T)d;
    } else if (a.dtype == "<f4") {
      float f;
      memcpy(&f, &a.data[i * 4], 4);
      v[i] = (T)f;
    } else if (a.dtype == "|u1") {
      v[i] = (T)(uint8_t)a.data[i];
    } else {
      int32_t x;
      memcpy(&x, &a.data[i * 4], 4);
      v[i] = (T)x;
    }
  }
  return v;
}

// config.json of a golden: one flat object of strings, numbers and booleans.
bool read_config(const std::string& path, std::map<std::string, std::string>* kv, std::string* err) {
  std::string s;
  if (!read_file(path, &s)) return *err = "cannot read " + path, false;
  size_t p = s.find('{');
  while (p != std::string::npos) {
    size_t k0 = s.find('"', p + 1);
    if (k0 == std::string::npos) break;
    size_t k1 = s.find('"', k0 + 1);
    size_t colon = s.find(':', k1);
    if (k1 == std::string::npos || colon == std::string::npos) return *err = path + ": malformed", false;
    size_t v0 = s.find_first_not_of(" \t\r\n", colon + 1);
    size_t v1;
    std::string value;
    if (s[v0] == '"') {
      v1 = s.find('"', v0 + 1);
      value = s.substr(v0 + 1, v1 - v0 - 1);
      ++v1;
    } else {
      v1 = s.find_first_of(",}\r\n", v0);
      value = s.substr(v0, v1 - v0);
      value.erase(value.find_last_not_of(" \t") + 1);
    }
    (*kv)[s.substr(k0 + 1, k1 - k0 - 1)] = value;
    p = s.find_first_of(",}", v1);
    if (p == std::string::npos || s[p] == '}') break;
  }
  return true;
}

// |cuda - golden| <= rel * |golden| + abs, element by element (the golden README's rule).
void compare_golden(const std::string& what, const std::vector<float>& got, const std::vector<double>& want, double rel,
                    double abs_tol) {
  ++g_checks;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!(fabs((double)got[i] - want[i]) <= rel * fabs(want[i]) + abs_tol) && bad++ < 3)
      failf("%s: element %zu golden %.9g, cuda %.9g", what.c_str(), i, want[i], got[i]);
}

// ||got - want|| <= rel ||want|| over the whole array (the goldens_v2 README's rule: elementwise
// relative errors mean nothing where float32 saturates).
void compare_golden_norm(const std::string& what, const std::vector<float>& got, const std::vector<double>& want,
                         double rel) {
  ++g_checks;
  double diff = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = (double)got[i] - want[i];
    diff += d * d;
    ref += want[i] * want[i];
  }
  const double err = sqrt(diff) / (sqrt(ref) > 1e-30 ? sqrt(ref) : 1e-30);
  if (!(err <= rel) || got.size() != want.size())
    failf("%s: norm-relative error %.3g > %.3g (or %zu values for %zu)", what.c_str(), err, rel, got.size(),
          want.size());
}

struct Golden {
  std::string name;
  bool v2 = false;       // goldens_v2 format (every option named in config.json)
  bool bf16 = false;     // v2: the logits hold bf16 values
  Config cfg;
  std::vector<float> bias;
  int64_t T = 0;
  std::vector<float> logits, dw;
  std::vector<int32_t> live_idx, replay_idx;
  std::vector<double> live_w, replay_w, live_grad, replay_grad;
  std::vector<uint8_t> live_rows, replay_rows;  // v2 ZERO cases: rows flagged non-finite
  int64_t error_row_live = -1, error_row_replay = -1;  // v2 ERROR cases
  std::string dir;                                     // v2: section 6 files are read from here
  std::map<std::string, std::string> kv;               // v2: config.json
};

// config.json keys. v1: the routing options it had. v2 adds every option of spec sections 1-5 and the
// section 6 ones (padding, losses, dropping, bias update), which check_golden_section6 runs through the
// device-pointer entry points (the bias update is the caller's arithmetic on the valid counts).
const char* const kKnownKeys[] = {"name", "score", "topk", "E", "T", "bias", "groups", "group_topk", "scale",
                                  "pre_softmax", "seed", "dtype", "group_score", "normalize", "nonfinite",
                                  "expected_error_row_live", "expected_error_row_replay"};
const char* const kSectionSixKeys[] = {"padding_mask", "seq_length", "batch", "seq_layout", "aux_loss_coeff",
                                       "seq_aux_loss_coeff", "global_aux_loss_coeff", "z_loss_coeff",
                                       "capacity_factor", "drop_policy", "pad_to_capacity", "capacity",
                                       "bias_update_rate"};

bool load_golden(const std::string& dir, const std::string& name, Golden* g, std::string* err) {
  std::map<std::string, std::string> kv;
  if (!read_config(dir + "/config.json", &kv, err)) return false;
  // Every key must be understood: a golden exercising an option this check does not set would
  // otherwise pass against the wrong configuration.
  auto listed = [](const char* const* b, const char* const* e, const std::string& key) {
    return std::find_if(b, e, [&](const char* k) { return key == k; }) != e;
  };
  for (auto& e : kv)
    if (!listed(std::begin(kKnownKeys), std::end(kKnownKeys), e.first) &&
        !listed(std::begin(kSectionSixKeys), std::end(kSectionSixKeys), e.first))
      return *err = dir + "/config.json: key '" + e.first + "' is unknown to moe_check (native/bench/check_goldens.cu)",
             false;
  auto set = [&](const char* key) { return kv.count(key) && kv[key] != "null"; };
  auto text = [&](const char* key, const char* fallback) { return set(key) ? kv[key] : std::string(fallback); };
  g->name = name;
  g->dir = dir;
  g->kv = kv;
  g->v2 = kv.count("nonfinite") != 0;
  g->bf16 = kv["dtype"] == "bf16";
  g->T = atoll(kv["T"].c_str());
  const bool bias = kv["bias"] == "true";
  const std::string score = kv["score"];
  g->cfg = Config{nullptr, atoi(kv["E"].c_str()), atoi(kv["topk"].c_str()),
                  score == "sigmoid" ? MOE_SCORE_SIGMOID : score == "sqrtsoftplus" ? MOE_SCORE_SQRTSOFTPLUS
                                                                                     : MOE_SCORE_SOFTMAX,
                  kv["pre_softmax"] == "true", set("groups") ? atoi(kv["groups"].c_str()) : 0,
                  set("group_topk") ? atoi(kv["group_topk"].c_str()) : 0,
                  set("scale") ? (float)atof(kv["scale"].c_str()) : 1.0f, false};
  if (score != "softmax" && score != "sigmoid" && score != "sqrtsoftplus")
    return *err = dir + ": score '" + score + "' unknown to moe_check", false;
  const std::string gs = text("group_score", "TOPK_SUM"), norm = text("normalize", "default"),
                    nf = text("nonfinite", "PROPAGATE");
  g->cfg.group_score = gs == "TOP2_SUM" ? MOE_GROUP_TOP2_SUM : gs == "MAX" ? MOE_GROUP_MAX : MOE_GROUP_TOPK_SUM;
  g->cfg.normalize = norm == "true" ? MOE_NORMALIZE_ON : norm == "false" ? MOE_NORMALIZE_OFF : MOE_NORMALIZE_DEFAULT;
  g->cfg.nonfinite = nf == "ZERO" ? MOE_NONFINITE_ZERO : nf == "ERROR" ? MOE_NONFINITE_ERROR : MOE_NONFINITE_PROPAGATE;
  if ((gs != "TOPK_SUM" && gs != "TOP2_SUM" && gs != "MAX") || (norm != "true" && norm != "false" && norm != "default") ||
      (nf != "PROPAGATE" && nf != "ZERO" && nf != "ERROR"))
    return *err = dir + ": group_score/normalize/nonfinite value unknown to moe_check", false;
  if (set("expected_error_row_live")) g->error_row_live = atoll(kv["expected_error_row_live"].c_str());
  if (set("expected_error_row_replay")) g->error_row_replay = atoll(kv["expected_error_row_replay"].c_str());
  Npy a;
  auto load = [&](const char* file) { return read_npy(dir + "/" + file, &a, err); };
  struct stat st;
  auto exists = [&](const char* file) { return stat((dir + "/" + file).c_str(), &st) == 0; };
  if (bias) {
    if (!load("bias.npy")) return false;
    g->bias = as<float>(a);
    g->cfg.bias_values = g->bias.data();
  }
  if (!load("logits.npy")) return false;
  g->logits = as<float>(a);
  if (!load("grad_weights.npy")) return false;
  g->dw = as<float>(a);
  if (!load("replay_idx.npy")) return false;
  g->replay_idx = as<int32_t>(a);
  if (g->cfg.nonfinite == MOE_NONFINITE_ERROR) {  // no outputs: the calls are rejected
    if (g->error_row_live < 0 || g->error_row_replay < 0) return *err = dir + ": ERROR case without expected rows", false;
  } else {
    if (!load("live_idx.npy")) return false;
    g->live_idx = as<int32_t>(a);
    if (!load("live_weights.npy")) return false;
    g->live_w = as<double>(a);
    if (!load("replay_weights.npy")) return false;
    g->replay_w = as<double>(a);
    if (!load("live_grad_logits.npy")) return false;
    g->live_grad = as<double>(a);
    if (!load("replay_grad_logits.npy")) return false;
    g->replay_grad = as<double>(a);
    if (g->live_idx.size() != (size_t)g->T * g->cfg.k) return *err = dir + ": inconsistent shapes", false;
  }
  if (exists("live_nonfinite_rows.npy")) {
    if (!load("live_nonfinite_rows.npy")) return false;
    g->live_rows = as<uint8_t>(a);
    if (!load("replay_nonfinite_rows.npy")) return false;
    g->replay_rows = as<uint8_t>(a);
  }
  if (g->logits.size() != (size_t)g->T * g->cfg.E || g->replay_idx.size() != (size_t)g->T * g->cfg.k)
    return *err = dir + ": inconsistent shapes", false;
  return true;
}

constexpr double kRel = 1e-5;
const char* const kDtypeNames[] = {"f32", "bf16", "f16"};

// What every golden check starts from: both routers of the golden's configuration, its logits in the dtype
// on the host and on the device, and the tag that names the golden and the dtype in each failure.
struct GoldenSetup {
  Routers r;
  const std::vector<uint8_t> logits;
  const std::string tag;
  DBuf<uint8_t> d_logits;
  GoldenSetup(const Golden& g, int dtype)
      : r(routers_of(g)), logits(to_dtype(g.logits, dtype)), tag(g.name + " " + kDtypeNames[dtype] + " golden "),
        d_logits(logits.size()) {
    d_logits.up(logits.data());
  }
  static Routers routers_of(const Golden& g) {
    Config cfg = g.cfg;
    cfg.name = g.name.c_str();
    std::mt19937_64 unused(1);  // Routers draws a random bias; a golden's bias is its bias_values
    return Routers(cfg, unused);
  }
};

// One golden in one dtype: CUDA (device pointers and host staging) equals the CPU backend bit for bit
// on live routing, replay of the golden's indices and backward at the live and replayed indices.
void check_golden(const Golden& g, int dtype, cudaStream_t stream) {
  const int64_t T = g.T;
  const int E = g.cfg.E, k = g.cfg.k;
  GoldenSetup setup(g, dtype);
  auto& [r, logits, tag, d_logits] = setup;
  DBuf<int32_t> d_idx((size_t)T * k), d_rep((size_t)T * k), d_live((size_t)T * k);
  DBuf<float> d_w((size_t)T * k), d_dw((size_t)T * k), d_grad((size_t)T * E);
  DBuf<int64_t> d_nf(1);
  d_rep.up(g.replay_idx.data());
  d_live.up(g.live_idx.data());
  d_dw.up(g.dw.data());
  for (int replay = 0; replay < 2; ++replay) {
    const int32_t* rep = replay ? g.replay_idx.data() : nullptr;
    const char* what = replay ? "replay" : "live";
    std::vector<int32_t> ci((size_t)T * k), hi((size_t)T * k, -7);
    std::vector<float> cw((size_t)T * k), hw((size_t)T * k, -1.0f);
    int64_t cnf = -1, hnf = -1;
    MK(moe_route(r.cpu, logits.data(), dtype, T, rep, nullptr, ci.data(), cw.data(), nullptr, &cnf, nullptr));
    d_idx.poison();
    d_w.poison();
    d_nf.poison();
    MK(moe_route(r.gpu, d_logits.p, dtype, T, replay ? d_rep.p : nullptr, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
    CK(cudaStreamSynchronize(stream));
    const std::vector<int32_t> gi = d_idx.down();
    const std::vector<float> gw = d_w.down();
    compare_route(tag + what + "/device", T, k, ci, cw, cnf, gi, gw, d_nf.down()[0]);
    MK(moe_route_host(r.gpu, logits.data(), dtype, T, rep, nullptr, hi.data(), hw.data(), nullptr, &hnf));
    compare_route(tag + what + "/host", T, k, ci, cw, cnf, hi, hw, hnf);
    if (dtype == MOE_DTYPE_F32) {
      ++g_checks;
      if (gi != (replay ? g.replay_idx : g.live_idx)) failf("%s%s: indices differ from the golden", tag.c_str(), what);
      compare_golden(tag + what + " weights", gw, replay ? g.replay_w : g.live_w, kRel, 1e-7);
    }
    // backward at the indices just used
    const std::vector<int32_t>& ix = replay ? g.replay_idx : g.live_idx;
    std::vector<float> cg((size_t)T * E), hg((size_t)T * E, 7.0f);
    MK(moe_route_backward(r.cpu, logits.data(), dtype, T, ix.data(), g.dw.data(), nullptr, cg.data(), nullptr));
    d_grad.poison();
    MK(moe_route_backward(r.gpu, d_logits.p, dtype, T, replay ? d_rep.p : d_live.p, d_dw.p, nullptr, d_grad.p, stream));
    CK(cudaStreamSynchronize(stream));
    const std::vector<float> gg = d_grad.down();
    compare_grad(tag + what + " backward/device", cg, gg);
    MK(moe_route_backward_host(r.gpu, logits.data(), dtype, T, ix.data(), g.dw.data(), nullptr, hg.data()));
    compare_grad(tag + what + " backward/host", cg, hg);
    if (dtype == MOE_DTYPE_F32) compare_golden(tag + what + " gradients", gg, replay ? g.replay_grad : g.live_grad, kRel, 1e-6);
  }
  int64_t row = 0;
  int reason = 0;
  ++g_checks;
  if (moe_router_check_replay(r.gpu, &row, &reason) != MOE_OK) failf("%s: valid golden rows rejected (row %lld)", tag.c_str(), (long long)row);
}


// Spec section 6 of a goldens_v2 case through the device-pointer entry points (check_training.cu checks
// CUDA against the CPU bit for bit): valid tokens from the padding mask, the valid counts, each loss alone
// (value, aux counts, gradient), the dropping after live routing and after replay, the final counts.
// Where the dtype holds the inputs exactly: counts, maps and kept entries exact, floats 1e-5 norm-relative.
void check_golden_section6(const Golden& g, int dtype, Routers& r, const std::vector<uint8_t>& logits,
                           const uint8_t* d_logits, const Forward& live, const Forward& rep, bool exact,
                           cudaStream_t stream) {
  const int64_t T = g.T;
  const int E = g.cfg.E, k = g.cfg.k;
  const std::string tag = g.name + " " + kDtypeNames[dtype] + " golden section 6";
  auto value = [&](const char* key) {
    auto it = g.kv.find(key);
    return it == g.kv.end() || it->second == "null" ? std::string() : it->second;
  };
  struct stat st;
  auto exists = [&](const std::string& file) { return stat((g.dir + "/" + file).c_str(), &st) == 0; };
  auto load = [&](const std::string& file, Npy* a) {
    std::string err;
    if (!read_npy(g.dir + "/" + file, a, &err)) {
      failf("%s: %s", tag.c_str(), err.c_str());
      return false;
    }
    return true;
  };
  auto expect_ints = [&](const std::string& what, const std::vector<int32_t>& got, const std::string& file) {
    Npy a;
    if (!exact || !load(file, &a)) return;
    ++g_checks;
    if (got != as<int32_t>(a)) failf("%s: %s differ from the golden", tag.c_str(), what.c_str());
  };
  auto expect_bytes = [&](const std::string& what, const std::vector<uint8_t>& got, const std::string& file) {
    Npy a;
    if (!exact || !load(file, &a)) return;
    ++g_checks;
    if (got != as<uint8_t>(a)) failf("%s: %s differ from the golden", tag.c_str(), what.c_str());
  };
  auto expect_floats = [&](const std::string& what, const std::vector<float>& got, const std::string& file) {
    Npy a;
    if (exact && load(file, &a)) compare_golden_norm(tag + " " + what, got, as<double>(a), kRel);
  };
  auto expect_scalar = [&](const std::string& what, double got, const std::string& file) {
    Npy a;
    if (!exact || !load(file, &a)) return;
    const double want = as<double>(a)[0];
    ++g_checks;
    if (!(fabs(got - want) <= kRel * (fabs(want) > 1e-30 ? fabs(want) : 1e-30)))
      failf("%s: %s %.9g, golden %.9g", tag.c_str(), what.c_str(), got, want);
  };
  std::vector<uint8_t> padding;
  if (exists("padding_mask.npy")) {
    Npy a;
    if (!load("padding_mask.npy", &a)) return;
    padding = as<uint8_t>(a);
  }
  const std::vector<uint8_t> valid = check_valid_tokens(r, tag, dtype, T, E, logits, d_logits, padding, stream);
  const std::vector<int32_t> vcounts = check_counts(r, tag, T, k, E, live.idx, valid, stream);
  if (exists("valid_tokens_per_expert.npy"))
    expect_ints("valid tokens per expert", vcounts, "valid_tokens_per_expert.npy");
  // each loss alone: the golden's gradients are per loss
  const std::vector<float> zeros((size_t)T * E, 0.0f);
  std::vector<double> G;
  double Ng = 0.0;
  if (exists("global_tokens_per_expert.npy")) {
    Npy a;
    if (!load("global_tokens_per_expert.npy", &a)) return;
    G = as<double>(a);
    if (!load("global_num_tokens.npy", &a)) return;
    Ng = as<double>(a)[0];
  }
  const char* const names[] = {"aux", "seq_aux", "global_aux", "z"};
  const char* const keys[] = {"aux_loss_coeff", "seq_aux_loss_coeff", "global_aux_loss_coeff", "z_loss_coeff"};
  for (int which = 0; which < 4; ++which) {
    const std::string coeff = value(keys[which]);
    if (coeff.empty()) continue;
    moe_loss_config c{};
    const float f = (float)atof(coeff.c_str());
    if (which == 0) c.aux_coeff = f;
    if (which == 1) {
      c.seq_aux_coeff = f;
      c.seq_length = atoll(value("seq_length").c_str());
      c.seq_layout = value("seq_layout") == "BS" ? MOE_SEQ_BS : MOE_SEQ_SB;
    }
    if (which == 2) {
      if (G.empty()) {
        failf("%s: global aux loss without global_tokens_per_expert.npy", tag.c_str());
        continue;
      }
      c.global_aux_coeff = f;
      c.global_tokens = G.data();
      c.global_num_tokens = Ng;
    }
    if (which == 3) c.z_coeff = f;
    const std::string n = names[which];
    const LossResult lr = check_losses(r, tag + " " + n, dtype, T, E, logits, d_logits, valid, c, true, zeros, stream);
    if (lr.status != MOE_OK) continue;
    const double v = which == 0 ? lr.values.aux_loss : which == 1 ? lr.values.seq_aux_loss
                     : which == 2 ? lr.values.global_aux_loss : lr.values.z_loss;
    expect_scalar(n + " loss", v, n + "_loss.npy");
    expect_floats(n + " loss gradient", lr.grad, n + "_grad_logits.npy");
    if (which == 0 && exists("aux_tokens_per_expert.npy"))
      expect_ints("aux tokens per expert", lr.counts, "aux_tokens_per_expert.npy");
  }
  // dropping after live routing and after replay; tokens_per_expert are the final map's column sums
  std::vector<int32_t> final_counts = check_counts(r, tag + " (all rows)", T, k, E, live.idx, {}, stream);
  const std::string cf = value("capacity_factor");
  if (!cf.empty()) {
    const int policy = value("drop_policy") == "position" ? MOE_DROP_POSITION : MOE_DROP_PROBS;
    const int pad = value("pad_to_capacity") == "true";
    for (int replay = 0; replay < 2; ++replay) {
      const std::string p = replay ? "replay_drop_" : "live_drop_";
      const DropResult d = check_drop(r, tag + " " + p, T, k, E, replay ? g.replay_idx : live.idx,
                                      replay ? rep.dev_w : live.dev_w, atof(cf.c_str()), policy, pad, stream);
      if (d.status != MOE_OK) continue;
      expect_bytes(p + "routing map", d.map, p + "routing_map.npy");
      expect_bytes(p + "kept", d.kept, p + "kept.npy");
      expect_ints(p + "kept counts", d.kept_counts, p + "kept_counts.npy");
      expect_floats(p + "routing probs", d.probs, p + "routing_probs.npy");
      if (!replay) {
        // the final counts through the device map form, over every row
        std::vector<int32_t> cm((size_t)E, -1);
        MK(moe_map_tokens_per_expert_device(r.cpu, d.map.data(), nullptr, T, cm.data(), nullptr));
        final_counts = cm;
      }
    }
  }
  expect_ints("tokens per expert", final_counts, "tokens_per_expert.npy");
}

// One goldens_v2 case in one dtype: CUDA equals the CPU backend bit for bit (indices, weights, row
// flags, gradients, rejections) on both paths (check_forward / check_backward), and where the dtype
// holds the case's inputs exactly (fp32, and bf16 for bf16 cases) the device results match the
// golden: indices exact, floats 1e-5 norm-relative, row flags exact, ERROR rejections naming the
// expected rows. Backward at the live and the replayed indices with each forward's flags.
void check_golden_v2(const Golden& g, int dtype, cudaStream_t stream) {
  const int64_t T = g.T;
  const int E = g.cfg.E, k = g.cfg.k;
  GoldenSetup setup(g, dtype);
  auto& [r, logits, tag, d_logits] = setup;
  const bool exact = dtype == MOE_DTYPE_F32 || (dtype == MOE_DTYPE_BF16 && g.bf16);
  DBuf<int32_t> d_rep(g.replay_idx.size());
  d_rep.up(g.replay_idx.data());
  const Forward live = check_forward(r, tag + "live", dtype, T, k, logits, d_logits.p, nullptr, nullptr, nullptr,
                                     nullptr, false, stream);
  const Forward rep = check_forward(r, tag + "replay", dtype, T, k, logits, d_logits.p, g.replay_idx.data(), d_rep.p,
                                    nullptr, nullptr, false, stream);
  if (g.cfg.nonfinite == MOE_NONFINITE_ERROR) {
    // The live, replay and replay-backward calls are rejected naming the case's rows (the CUDA
    // rejections equal the CPU's, checked above).
    const Backward bw = check_backward(r, tag + "backward(replay idx)", dtype, T, E, k, logits, d_logits.p,
                                       g.replay_idx, g.dw, std::vector<uint8_t>((size_t)T, 0), stream);
    if (!exact) return;
    ++g_checks;
    if (live.status != MOE_ERR_NONFINITE || message_row(live.message) != g.error_row_live ||
        rep.status != MOE_ERR_NONFINITE || message_row(rep.message) != g.error_row_replay ||
        bw.status != MOE_ERR_NONFINITE || message_row(bw.message) != g.error_row_replay)
      failf("%s: ERROR case: live '%s', replay '%s', backward '%s'; expected rows %lld / %lld", tag.c_str(),
            live.message.c_str(), rep.message.c_str(), bw.message.c_str(), (long long)g.error_row_live,
            (long long)g.error_row_replay);
    return;
  }
  if (live.status != MOE_OK || rep.status != MOE_OK) return;  // reported by check_forward
  const Backward blive = check_backward(r, tag + "backward(live idx)", dtype, T, E, k, logits, d_logits.p, live.idx,
                                        g.dw, live.flags, stream);
  const Backward brep = check_backward(r, tag + "backward(replay idx)", dtype, T, E, k, logits, d_logits.p,
                                       g.replay_idx, g.dw, rep.flags, stream);
  check_golden_section6(g, dtype, r, logits, d_logits.p, live, rep, exact, stream);
  if (!exact) return;
  ++g_checks;
  if (live.dev_idx != g.live_idx) failf("%slive: indices differ from the golden", tag.c_str());
  if (rep.dev_idx != g.replay_idx) failf("%sreplay: indices differ from the given ones", tag.c_str());
  const std::vector<uint8_t> none((size_t)T, 0);
  if (live.dev_flags != (g.live_rows.empty() ? none : g.live_rows) ||
      rep.dev_flags != (g.replay_rows.empty() ? none : g.replay_rows))
    failf("%s: non-finite row flags differ from the golden", tag.c_str());
  compare_golden_norm(tag + "live weights", live.dev_w, g.live_w, kRel);
  compare_golden_norm(tag + "replay weights", rep.dev_w, g.replay_w, kRel);
  compare_golden_norm(tag + "live gradients", blive.dev_grad, g.live_grad, kRel);
  compare_golden_norm(tag + "replay gradients", brep.dev_grad, g.replay_grad, kRel);
}

// ------------------------------------------------------------------------------ edge inputs
// Raw logits of one edge kind in `dtype`. 4: signed zeros (rows of +0, of -0, mixed); 5: NaN and
// infinite rows (all NaN, all +inf, all -inf, mixed, one NaN); 6: subnormals and the largest finite
// magnitudes of the dtype, with some plain values.
std::vector<uint8_t> edge_logits(std::mt19937_64& rng, int64_t T, int E, int dtype, int kind) {
  const size_t esz = dtype == MOE_DTYPE_F32 ? 4 : 2;
  std::vector<uint8_t> out((size_t)T * E * esz);
  const uint32_t sign32 = 0x80000000u;
  const uint32_t qnan = dtype == MOE_DTYPE_F32 ? 0x7fc00000u : dtype == MOE_DTYPE_BF16 ? 0x7fc0u : 0x7e00u;
  const uint32_t inf = dtype == MOE_DTYPE_F32 ? 0x7f800000u : dtype == MOE_DTYPE_BF16 ? 0x7f80u : 0x7c00u;
  const uint32_t sign = dtype == MOE_DTYPE_F32 ? sign32 : 0x8000u;
  const uint32_t max_finite = dtype == MOE_DTYPE_F32 ? 0x7f7fffffu : dtype == MOE_DTYPE_BF16 ? 0x7f7fu : 0x7bffu;
  const uint32_t man_mask = dtype == MOE_DTYPE_F32 ? 0x007fffffu : dtype == MOE_DTYPE_BF16 ? 0x7fu : 0x3ffu;
  const uint32_t one = dtype == MOE_DTYPE_F32 ? 0x3f800000u : dtype == MOE_DTYPE_BF16 ? 0x3f80u : 0x3c00u;
  auto put = [&](size_t i, uint32_t bits) {
    if (esz == 4)
      memcpy(&out[i * 4], &bits, 4);
    else {
      uint16_t h = (uint16_t)bits;
      memcpy(&out[i * 2], &h, 2);
    }
  };
  for (int64_t t = 0; t < T; ++t) {
    const int row_kind = (int)(rng() % 5);
    for (int i = 0; i < E; ++i) {
      const size_t at = (size_t)t * E + i;
      const uint32_t s = rng() % 2 ? sign : 0;
      uint32_t b = 0;
      if (kind == 4) {
        b = row_kind == 0 ? 0 : row_kind == 1 ? sign : row_kind == 2 ? s : (rng() % 4 ? s : one | s);
      } else if (kind == 5) {
        b = row_kind == 0 ? qnan : row_kind == 1 ? inf : row_kind == 2 ? (inf | sign)
            : row_kind == 3 ? (rng() % 2 ? inf : (inf | sign)) : (i == (int)(t % E) ? qnan : (one | s));
      } else {
        const uint32_t sub = (uint32_t)(rng() & man_mask) | 1u;
        b = row_kind == 0 ? (sub | s) : row_kind == 1 ? (max_finite | s) : row_kind == 2 ? (rng() % 2 ? (sub | s) : (max_finite | s))
            : row_kind == 3 ? (1u | s) : (rng() % 3 ? (sub | s) : (one | s));
      }
      put(at, b);
    }
  }
  return out;
}

// T = 0 on every entry point: success, nothing written but the non-finite count (0).
void check_empty(const Config& c, cudaStream_t stream) {
  std::mt19937_64 rng(3);
  Routers r(c, rng);
  DBuf<int32_t> d_idx(64), d_rep(64);
  DBuf<float> d_w(64), d_grad(64);
  DBuf<int64_t> d_nf(1);
  DBuf<uint8_t> d_logits(64), d_mask(64);
  d_idx.poison();
  d_w.poison();
  d_grad.poison();
  d_nf.poison();
  ++g_checks;
  int st1 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, 0, nullptr, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream);
  CK(cudaStreamSynchronize(stream));
  const int64_t nf1 = d_nf.down()[0];
  d_nf.poison();
  int st2 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, 0, d_rep.p, d_mask.p, d_idx.p, d_w.p, nullptr, d_nf.p, stream);
  int st3 = moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_F16, 0, d_rep.p, d_w.p, nullptr, d_grad.p, stream);
  CK(cudaStreamSynchronize(stream));
  const int64_t nf2 = d_nf.down()[0];
  int64_t hnf = -1;
  int32_t hi = -7;
  float hw = -1.0f, hg = -1.0f;
  int st4 = moe_route_host(r.gpu, &hw, MOE_DTYPE_F32, 0, &hi, nullptr, &hi, &hw, nullptr, &hnf);
  int st5 = moe_route_backward_host(r.gpu, &hw, MOE_DTYPE_F32, 0, &hi, &hw, nullptr, &hg);
  int st6 = moe_router_check_replay(r.gpu, nullptr, nullptr);
  bool untouched = true;
  for (int32_t v : d_idx.down()) untouched &= v == -1;
  for (float v : d_w.down()) untouched &= fbits(v) == 0xffffffffu;
  for (float v : d_grad.down()) untouched &= fbits(v) == 0xffffffffu;
  if (st1 || st2 || st3 || st4 || st5 || st6 || nf1 != 0 || nf2 != 0 || hnf != 0 || !untouched || hi != -7 || hg != -1.0f)
    failf("%s T=0: statuses %d %d %d %d %d %d, non-finite %lld %lld %lld, outputs untouched %d (%s)", c.name, st1, st2,
          st3, st4, st5, st6, (long long)nf1, (long long)nf2, (long long)hnf, (int)untouched, moe_last_error_message());
}

}  // namespace

void run_goldens(const std::vector<std::string>& dirs, cudaStream_t stream) {
  for (const std::string& root : dirs) {
    DIR* d = opendir(root.c_str());
    if (!d) {
      failf("goldens: cannot open %s", root.c_str());
      continue;
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      struct stat st;
      if (e->d_name[0] != '.' && stat((root + "/" + e->d_name + "/config.json").c_str(), &st) == 0)
        names.push_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    if (names.empty()) failf("goldens: no cases under %s", root.c_str());
    for (const std::string& n : names) {
      Golden g;
      std::string err;
      if (!load_golden(root + "/" + n, n, &g, &err)) {
        failf("golden %s: %s", n.c_str(), err.c_str());
        continue;
      }
      const int before = g_failures;
      for (int dtype = 0; dtype < 3; ++dtype) {
        if (g.v2)
          check_golden_v2(g, dtype, stream);
        else
          check_golden(g, dtype, stream);
      }
      printf("golden %-34s %s\n", n.c_str(), g_failures == before ? "ok" : "MISMATCH");
      fflush(stdout);
    }
  }
}

void run_edges(cudaStream_t stream, bool quick) {
  const Config configs[] = {
      // name, E, k, score, pre, G, Gk, scale, bias
      {"edge_E1_k1", 1, 1, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"edge_E1_k1_sigmoid", 1, 1, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"edge_E3_k3", 3, 3, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"edge_E3_k3_pre", 3, 3, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
      {"edge_E64_k64_sigmoid_bias", 64, 64, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, true},
      {"edge_E64_k4_g64_pre", 64, 4, MOE_SCORE_SOFTMAX, 1, 64, 4, 1.0f, false},
      {"edge_E128_k64_g64", 128, 64, MOE_SCORE_SIGMOID, 0, 64, 32, 1.0f, false},
      {"edge_E513_k8", 513, 8, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"edge_E513_k9_pre", 513, 9, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
      {"edge_E2048_k64_pre", 2048, 64, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
      {"edge_E4096_k64", 4096, 64, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"edge_E4096_k8_g64_bias", 4096, 8, MOE_SCORE_SIGMOID, 0, 64, 8, 2.5f, true},
      // routing options of spec sections 1-5 at the same extremes
      {"edge_E1_k1_sqrtsoftplus", 1, 1, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false},
      with_options({"edge_E3_k3_pre_bias_norm", 3, 3, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, true}, MOE_NORMALIZE_ON,
                   MOE_GROUP_TOPK_SUM, MOE_NONFINITE_PROPAGATE, MOE_MINUS_ONE_REJECT),
      with_options({"edge_E3_k3_sqrtsoftplus_arange", 3, 3, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_PROPAGATE, MOE_MINUS_ONE_ARANGE),
      with_options({"edge_E64_k64_sqrtsoftplus_bias_zero", 64, 64, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, true},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_ZERO, MOE_MINUS_ONE_REJECT),
      with_options({"edge_E128_k64_g64_top2_bias_error", 128, 64, MOE_SCORE_SIGMOID, 0, 64, 32, 1.0f, true},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOP2_SUM, MOE_NONFINITE_ERROR, MOE_MINUS_ONE_REJECT),
      with_options({"edge_E64_k4_g64_max_pre_zero_live", 64, 4, MOE_SCORE_SOFTMAX, 1, 64, 4, 1.0f, false},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_MAX, MOE_NONFINITE_ZERO, MOE_MINUS_ONE_LIVE),
      with_options({"edge_E2048_k33_g64_max_error", 2048, 33, MOE_SCORE_SIGMOID, 0, 64, 2, 1.0f, false},
                   MOE_NORMALIZE_OFF, MOE_GROUP_MAX, MOE_NONFINITE_ERROR, MOE_MINUS_ONE_REJECT),
      with_options({"edge_E4096_k64_sqrtsoftplus_bias_zero_arange", 4096, 64, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f,
                    true},
                   MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_ZERO, MOE_MINUS_ONE_ARANGE),
      with_options({"edge_E4096_k8_g64_pre_bias_norm_error_live", 4096, 8, MOE_SCORE_SOFTMAX, 1, 64, 8, 1.0f, true},
                   MOE_NORMALIZE_ON, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_ERROR, MOE_MINUS_ONE_LIVE),
  };
  constexpr int kV1Edges = 12;  // the first ones
  std::mt19937_64 rng(777);
  int index = -1;
  for (const Config& c : configs) {
    ++index;
    const int before = g_failures;
    check_empty(c, stream);
    // T: one row; rows that make the grid-stride loops turn several times, not a multiple of a block.
    const int64_t big = c.E > 512 ? (quick ? 19 : 37) : (quick ? 131 : 301);
    // Quick runs: one kind per dtype for large E and for the option configurations, plus the
    // NaN/inf rows in every dtype where ZERO acts on them.
    const bool one_kind = c.E >= 2048 || index >= kV1Edges;
    for (int dtype = 0; dtype < 3; ++dtype)
      for (int kind = 4; kind <= 6; ++kind) {
        if (quick && one_kind && kind != 4 + dtype && !(kind == 5 && c.nonfinite == MOE_NONFINITE_ZERO)) continue;
        for (int64_t T : {(int64_t)1, big})
          check_case_logits(c, dtype, T, kind, edge_logits(rng, T, c.E, dtype, kind), rng, stream);
      }
    printf("%-36s %s\n", c.name, g_failures == before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
}

}  // namespace check

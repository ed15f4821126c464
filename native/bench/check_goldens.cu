// SPDX-License-Identifier: Apache-2.0
// moe_check sections "goldens" and "edges": the float64 reference cases (java/src/test/goldens,
// ../shared/goldens) on live, replay and backward in fp32/bf16/fp16 through the device-pointer and
// host-staged paths, and edge inputs (T = 0, signed zeros, NaN and infinite rows, subnormals, huge
// values, E = 1, 3, 513, 2048, 4096, k = E, 64 groups). CUDA must equal the CPU backend bit for bit;
// in fp32 it must also match the golden within its tolerance (indices exact).
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "check_support.h"

namespace check {
namespace {

// ------------------------------------------------------------------------------ .npy and config.json
struct Npy {
  std::string dtype;  // "<f4", "<f8", "<i4"
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
  const size_t esz = a->dtype == "<f8" ? 8 : 4;
  if (a->dtype != "<f4" && a->dtype != "<f8" && a->dtype != "<i4") return *err = path + ": dtype " + a->dtype, false;
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

struct Golden {
  std::string name;
  Config cfg;
  std::vector<float> bias;
  int64_t T = 0;
  std::vector<float> logits, dw;
  std::vector<int32_t> live_idx, replay_idx;
  std::vector<double> live_w, replay_w, live_grad, replay_grad;
};

bool load_golden(const std::string& dir, const std::string& name, Golden* g, std::string* err) {
  std::map<std::string, std::string> kv;
  if (!read_config(dir + "/config.json", &kv, err)) return false;
  // Every key must be understood: a golden exercising an option this check does not set would
  // otherwise pass against the wrong configuration.
  static const char* known[] = {"name", "score", "topk", "E", "T", "bias", "groups", "group_topk", "scale",
                                "pre_softmax"};
  for (auto& e : kv)
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return e.first == k; }) ==
        std::end(known))
      return *err = dir + "/config.json: key '" + e.first + "' is unknown to moe_check (native/bench/check_goldens.cu)",
             false;
  g->name = name;
  g->T = atoll(kv["T"].c_str());
  const bool bias = kv["bias"] == "true";
  g->cfg = Config{nullptr, atoi(kv["E"].c_str()), atoi(kv["topk"].c_str()),
                  kv["score"] == "sigmoid" ? MOE_SCORE_SIGMOID : MOE_SCORE_SOFTMAX, kv["pre_softmax"] == "true",
                  kv.count("groups") ? atoi(kv["groups"].c_str()) : 0,
                  kv.count("group_topk") ? atoi(kv["group_topk"].c_str()) : 0,
                  kv.count("scale") ? (float)atof(kv["scale"].c_str()) : 1.0f, false};
  Npy a;
  auto load = [&](const char* file) { return read_npy(dir + "/" + file, &a, err); };
  if (bias) {
    if (!load("bias.npy")) return false;
    g->bias = as<float>(a);
    g->cfg.bias_values = g->bias.data();
  }
  if (!load("logits.npy")) return false;
  g->logits = as<float>(a);
  if (!load("grad_weights.npy")) return false;
  g->dw = as<float>(a);
  if (!load("live_idx.npy")) return false;
  g->live_idx = as<int32_t>(a);
  if (!load("replay_idx.npy")) return false;
  g->replay_idx = as<int32_t>(a);
  if (!load("live_weights.npy")) return false;
  g->live_w = as<double>(a);
  if (!load("replay_weights.npy")) return false;
  g->replay_w = as<double>(a);
  if (!load("live_grad_logits.npy")) return false;
  g->live_grad = as<double>(a);
  if (!load("replay_grad_logits.npy")) return false;
  g->replay_grad = as<double>(a);
  if (g->logits.size() != (size_t)g->T * g->cfg.E || g->live_idx.size() != (size_t)g->T * g->cfg.k)
    return *err = dir + ": inconsistent shapes", false;
  return true;
}

constexpr double kRel = 1e-5;

// One golden in one dtype: CUDA (device pointers and host staging) equals the CPU backend bit for bit
// on live routing, replay of the golden's indices and backward at the live and replayed indices.
void check_golden(const Golden& g, int dtype, cudaStream_t stream) {
  static const char* dn[] = {"f32", "bf16", "f16"};
  const int64_t T = g.T;
  const int E = g.cfg.E, k = g.cfg.k;
  Config cfg = g.cfg;
  cfg.name = g.name.c_str();
  std::mt19937_64 unused(1);
  Routers r(cfg, unused);
  const std::vector<uint8_t> logits = to_dtype(g.logits, dtype);
  const std::string tag = g.name + " " + dn[dtype] + " golden ";
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
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
      for (int dtype = 0; dtype < 3; ++dtype) check_golden(g, dtype, stream);
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
  };
  std::mt19937_64 rng(777);
  for (const Config& c : configs) {
    const int before = g_failures;
    check_empty(c, stream);
    // T: one row; rows that make the grid-stride loops turn several times, not a multiple of a block.
    const int64_t big = c.E > 512 ? (quick ? 19 : 37) : (quick ? 131 : 301);
    for (int dtype = 0; dtype < 3; ++dtype)
      for (int kind = 4; kind <= 6; ++kind) {
        if (quick && c.E >= 2048 && kind != 4 + dtype) continue;
        for (int64_t T : {(int64_t)1, big})
          check_case_logits(c, dtype, T, kind, edge_logits(rng, T, c.E, dtype, kind), rng, stream);
      }
    printf("%-36s %s\n", c.name, g_failures == before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
}

}  // namespace check

// Core self-test without Python: the packed, blocked GEMM against its reference twin, on every
// instruction-set path this CPU runs, with shapes that exercise every edge (m < mr, n < nr,
// K > KC, several MC/NC tiles) and split across 1..3 "threads" run one after another.
// Exit code 0 only if every case matches.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "gemm.h"
#include "rnnfast.h"

using namespace rnnfast;

template <class T>
static int check(idx M, idx N, idx K, bool trans_a, bool accumulate) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<T> a(M * K), b(K * N), c0(M * N);
  for (auto& v : a) v = T(u(rng));
  for (auto& v : b) v = T(u(rng));
  for (auto& v : c0) v = T(u(rng));
  const idx rsa = trans_a ? 1 : K, csa = trans_a ? M : 1;
  std::vector<T> ref = c0;
  gemm_ref<T>(M, N, K, a.data(), rsa, csa, b.data(), N, 1, ref.data(), N, accumulate);
  const Kern<T> kern = kern_of<T>(active_kernels());
  const int nr = kern.nr;
  std::vector<T> bp(packed_b_size(K, N, nr));
  std::vector<T> first;
  for (int nth = 1; nth <= 3; ++nth) {
    std::vector<T> c = c0;
    for (int tid = 0; tid < nth; ++tid) pack_b_rowmajor_mt<T>(tid, nth, K, N, b.data(), N, nr, bp.data());
    for (int tid = 0; tid < nth; ++tid)
      gemm_mt<T>(kern, tid, nth, M, N, K, a.data(), rsa, csa, bp.data(), c.data(), N, accumulate);
    double err = 0, scale = 1e-30;
    for (idx i = 0; i < M * N; ++i) {
      err = std::fmax(err, std::fabs((double)c[i] - (double)ref[i]));
      scale = std::fmax(scale, std::fabs((double)ref[i]));
    }
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-13;
    if (err / scale > tol) {
      std::printf("FAIL %s %s M=%ld N=%ld K=%ld transA=%d acc=%d nth=%d rel err %g\n",
                  isa_name(), sizeof(T) == 4 ? "f32" : "f64", (long)M, (long)N, (long)K, trans_a,
                  accumulate, nth, err / scale);
      return 1;
    }
    if (nth == 1) first = c;
    else if (c != first) {
      std::printf("FAIL %s: result differs between 1 and %d threads\n", isa_name(), nth);
      return 1;
    }
  }
  return 0;
}

int main() {
  int failed = 0, run = 0;
  for (const char* isa : {"generic", "avx2", "avx512"}) {
    if (!select_isa(isa)) {
      std::printf("skip %s (not supported here)\n", isa);
      continue;
    }
    const idx shapes[][3] = {{1, 1, 1}, {7, 9, 3}, {13, 33, 300}, {100, 70, 17}, {200, 600, 520}};
    for (auto& s : shapes)
      for (int ta = 0; ta < 2; ++ta)
        for (int acc = 0; acc < 2; ++acc) {
          failed += check<float>(s[0], s[1], s[2], ta, acc);
          failed += check<double>(s[0], s[1], s[2], ta, acc);
          run += 2;
        }
  }
  std::printf("%d passed, %d failed\n", run - failed, failed);
  return failed ? 1 : 0;
}

// The machine's yardsticks for ds's CPU numbers: the BLAS SGEMM rate (for
// prefill GFLOP/s) and the memory copy bandwidth (decode reads every active
// weight once per token).
//   sgemm M N K THREADS -> "sgemm MxNxK: X GFLOP/s" and "copy: Y GB/s"
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char **argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: sgemm M N K THREADS\n");
    return 2;
  }
  long m = std::atol(argv[1]), n = std::atol(argv[2]), k = std::atol(argv[3]);
  openblas_set_num_threads(std::atoi(argv[4]));
  std::vector<float> a(m * k, 0.5f), b(k * n, 0.25f), c(m * n, 0.0f);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(),
                k, b.data(), k, 0.0f, c.data(), n);
  };
  run(); // warm up
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = s < best ? s : best;
  }
  std::printf("sgemm %ldx%ldx%ld: %.1f GFLOP/s\n", m, n, k, 2.0 * m * n * k / best / 1e9);

  // Copy bandwidth (read + write), 512 MiB, single stream, best of 3.
  size_t bytes = size_t(512) << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  double bestCopy = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bestCopy = s < bestCopy ? s : bestCopy;
  }
  std::printf("copy: %.1f GB/s\n", 2.0 * bytes / bestCopy / 1e9);
  return 0;
}

// sample_teacher MODEL.pt OUT.png [SOLVER] [STEPS] [N]
//
// Loads a model shipped by `fewstep train` (TorchScript + sidecar naming its schedule and
// prediction), samples N images with SOLVER in STEPS steps from seeds 0..N-1 and writes them as
// a PNG grid. Defaults: dpmpp_2m, 10 steps, 16 images.
#include <fewstep/fewstep.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3 || argc > 6) {
    std::fprintf(stderr, "usage: %s MODEL.pt OUT.png [SOLVER=dpmpp_2m] [STEPS=10] [N=16]\n", argv[0]);
    return 2;
  }
  const std::string model_path = argv[1], out = argv[2];
  const std::string solver = argc > 3 ? argv[3] : "dpmpp_2m";
  const int64_t steps = argc > 4 ? std::atoll(argv[4]) : 10;
  const int64_t n = argc > 5 ? std::atoll(argv[5]) : 16;
  try {
    const fewstep::ModelFile model = fewstep::load_model_file(model_path);
    std::vector<uint64_t> seeds;
    for (int64_t i = 0; i < n; ++i) seeds.push_back(static_cast<uint64_t>(i));
    const at::Tensor x_T = fewstep::randn_per_sample(model.sample_shape, seeds, at::TensorOptions().dtype(at::kFloat));
    const fewstep::Solution sol = fewstep::sample(model.denoiser, x_T, solver, steps);
    fewstep::write_png(out, fewstep::image_grid(sol.x.clamp(-1.0, 1.0)));
    std::printf("%s: %lld samples of %s with %s, %lld network evaluations each -> %s\n", argv[0],
                static_cast<long long>(n), model.name.c_str(), solver.c_str(), static_cast<long long>(sol.nfe),
                out.c_str());
    return 0;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what_without_backtrace());
    return 1;
  }
}

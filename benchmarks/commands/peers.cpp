// `fewstep-bench peers`: fewstep against diffusers' schedulers and k-diffusion's samplers on the same
// model, x_T and NFE. The peers are Python libraries, so the benchmark is a Python program
// (benchmarks/peers.py, needing requirements-interop.txt); this subcommand runs it with the
// interpreter the build was configured with, passing every argument through (`--help` lists them).
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "../command.h"

#ifndef FEWSTEP_BENCH_PYTHON
#define FEWSTEP_BENCH_PYTHON "python3"
#endif
#ifndef FEWSTEP_BENCH_SOURCE_DIR
#define FEWSTEP_BENCH_SOURCE_DIR "."
#endif

namespace fewstep::bench {
namespace {

class PeersCommand : public Command {
 public:
  void configure(CLI::App& app) override {
    app.allow_extras();
    app.prefix_command();
    app.footer("Arguments go to benchmarks/peers.py: --problems, --nfe, --samples, --fmnist-samples, --fd-samples, "
               "--out, --plot, ... (fewstep-bench peers --help-peers shows them).");
    app_ = &app;
  }

  int run(const GlobalOptions& global) override {
    const std::string script = std::string(FEWSTEP_BENCH_SOURCE_DIR) + "/benchmarks/peers.py";
    std::vector<std::string> args{FEWSTEP_BENCH_PYTHON, script};
    if (global.threads > 0) args.insert(args.end(), {"--threads", std::to_string(global.threads)});
    for (const auto& extra : app_->remaining()) args.push_back(extra == "--help-peers" ? "--help" : extra);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::cout.flush();
    ::execvp(argv[0], argv.data());
    std::cerr << "fewstep-bench peers: could not run " << args[0] << " " << script << "\n";
    return 2;
  }

 private:
  CLI::App* app_ = nullptr;
};

const bool registered = register_command(
    {"peers", "fewstep vs diffusers and k-diffusion at equal NFE (Python: benchmarks/peers.py)",
     [] { return std::make_unique<PeersCommand>(); }});

}  // namespace
}  // namespace fewstep::bench

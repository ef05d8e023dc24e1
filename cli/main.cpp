// fewstep: train denoisers and sample them from the command line. `fewstep --help` lists the
// subcommands; `fewstep <subcommand> --help` describes each flag with an example.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>

#include "command.h"
#include "fewstep/core/interrupt.h"
#include "fewstep/core/malloc_tuning.h"
#include "fewstep/version.h"

namespace {

// SIGINT/SIGTERM stop the library's loops between steps (core/interrupt.h); the training commands
// install their own handlers, which stop after the current step and write a checkpoint.
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int sig) {
  g_signal = sig;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills at once
}
int pending_signal() { return g_signal; }

constexpr int kMaxThreads = 1024;  // --threads: more than any machine fewstep runs on; a typo otherwise

// A library message that starts with the subcommand's own name ("sample: x_T has shape ...") is printed
// once under "fewstep sample: ", not as "fewstep sample: sample: ...".
std::string without_repeated_name(const std::string& subcommand, std::string message) {
  const std::string lead = subcommand + ": ";
  if (message.compare(0, lead.size(), lead) == 0) message.erase(0, lead.size());
  return message;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fewstep::cli;
  fewstep::tune_malloc_for_tensors();  // keep network activations' pages between calls (core/malloc_tuning.h)
  set_command_line(argc, argv);
  CLI::App app{"fewstep " + fewstep::version() +
               ": few-step diffusion sampling and distillation over LibTorch.\n"
               "Run 'fewstep <subcommand> --help' for the flags of one subcommand."};
  app.name("fewstep");  // not argv[0], which may be a build path
  app.require_subcommand(1, 1);
  app.fallthrough();  // global flags may also follow the subcommand's name
  app.set_version_flag("--version", "fewstep " + fewstep::version() + " (LibTorch " + fewstep::torch_version() + ")");
  GlobalOptions global;
  app.add_option("--threads", global.threads,
                 "LibTorch intra-op threads (0 = LibTorch's default, usually one per core). Training resumes "
                 "bit-exactly only with the same thread count; at most " + std::to_string(kMaxThreads) + ".")
      ->check(CLI::Range(0, kMaxThreads));

  std::vector<std::pair<CLI::App*, std::unique_ptr<Command>>> commands;
  for (const auto& info : registered_commands()) {
    CLI::App* sub = app.add_subcommand(info.name, info.description);
    if (!info.footer.empty()) sub->footer(info.footer);
    auto command = info.make();
    command->configure(*sub);
    commands.emplace_back(sub, std::move(command));
  }
  // Every seed flag (--seed, --gmm-seed, --pairs-seed, ...) is an unsigned 64-bit integer: "-1" is refused
  // rather than wrapped to 2^64 - 1 by the conversion (one check here rather than one per flag).
  std::vector<CLI::App*> apps = {&app};
  for (size_t i = 0; i < apps.size(); ++i) {
    for (CLI::App* sub : apps[i]->get_subcommands([](const CLI::App*) { return true; })) apps.push_back(sub);
    for (CLI::Option* opt : apps[i]->get_options()) {
      for (const std::string& name : opt->get_lnames()) {
        if (name == "seed" || (name.size() > 5 && name.compare(name.size() - 5, 5, "-seed") == 0)) {
          opt->check(unsigned_integer());
          break;
        }
      }
    }
  }

  // Name the subcommand (with its own subcommand: "fewstep distill consistency") in parse errors, and
  // point at its --help.
  std::string prefix = "fewstep";
  for (int i = 1; i < argc && prefix == "fewstep"; ++i) {
    for (auto& [sub, command] : commands) {
      if (sub->get_name() != argv[i]) continue;
      prefix = "fewstep " + sub->get_name();
      for (int j = i + 1; j < argc; ++j) {
        const auto nested = sub->get_subcommands([&](const CLI::App* s) { return s->get_name() == argv[j]; });
        if (!nested.empty()) {
          prefix += " " + nested.front()->get_name();
          break;
        }
      }
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A mistyped subcommand or flag gets a suggestion (and the list of subcommands) instead of
    // CLI11's "The following arguments were not expected".
    const std::string explained = explain_parse_error(app, argc, argv);
    std::cerr << prefix << ": " << (explained.empty() ? std::string(e.what()) : explained) << "\nRun '" << prefix
              << " --help' for the flags and an example.\n";
    return 2;
  }

  if (global.threads > 0) at::set_num_threads(global.threads);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  fewstep::set_interrupt_check(&pending_signal);
  for (auto& [sub, command] : commands) {
    if (!sub->parsed()) continue;
    const std::string& name = prefix;  // "fewstep distill consistency", as in parse errors
    const std::string last = name.substr(name.rfind(' ') + 1);
    try {
      return command->run(global);
    } catch (const fewstep::Interrupted& e) {
      std::cerr << name << ": interrupted by signal " << e.signal() << "; files already written are complete\n";
      return 128 + e.signal();
    } catch (const UsageError& e) {
      std::cerr << name << ": " << without_repeated_name(last, e.what()) << "\n";
      return 2;
    } catch (const c10::Error& e) {
      std::cerr << name << ": error: " << without_repeated_name(last, e.what_without_backtrace()) << "\n";
    } catch (const std::exception& e) {
      std::cerr << name << ": error: " << without_repeated_name(last, e.what()) << "\n";
    }
    return 1;
  }
  return 1;
}

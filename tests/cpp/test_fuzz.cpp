// Seeded random-mutation fuzzing of the parsers that read text from users and files: model sidecars
// (models/model_file.h), schedule specs (schedules/schedule_spec.h), the JSON nesting guard
// (core/json_text.h) and option values (core/options.h). Each mutated input must either parse or
// raise the library's error type (c10::Error, which carries the argument or file name); any other
// exception, a crash or a hang fails. Reproducible: case i of a run uses the seed
// FEWSTEP_FUZZ_SEED + i (default seed 0). CI runs kDefaultCases cases per target;
// FEWSTEP_FUZZ_CASES=N runs N (docs/reliability.md).
#include <gtest/gtest.h>

#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fewstep/core/json_text.h"
#include "fewstep/core/options.h"
#include "fewstep/models/model_file.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/schedules/schedule_spec.h"

namespace {

constexpr int64_t kDefaultCases = 1500;

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

const char* kSidecar =
    R"({"data": {"description": "Fashion-MNIST train split", "images": 60000, "name": "fmnist", "split": "train"},)"
    R"( "fewstep_version": "0.1.0", "format": "fewstep.model.v1", "model": "m.pt", "name": "m",)"
    R"( "network": {"config": {"attention": true, "base_channels": 16, "channel_mult": [1, 2, 2], "groups": 8,)"
    R"( "res_blocks": 1, "time_multiplier": 1000.0}, "kind": "UNet"}, "parameters": 211377, "prediction": "eps",)"
    R"( "sample_shape": [1, 28, 28], "schedule": {"beta_max": 20.0, "beta_min": 0.1, "name": "vp_linear",)"
    R"( "t_max": 1.0, "t_min": 0.001}, "time_input": "t", "time_scale": 1.0,)"
    R"( "sampler": {"solver": "ddim", "timesteps": [1.0, 0.5, 0.1, 0.001]}})";

const std::vector<std::string> kSchedules = {
    R"({"name": "vp_linear", "beta_min": 0.1, "beta_max": 20.0, "t_min": 0.001, "t_max": 1.0})",
    R"({"name": "vp_cosine", "s": 0.008})",
    R"({"name": "edm", "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5})",
};

// Fragments a hostile or careless editor puts into JSON: numbers at the edges of double and int64,
// NaN spellings, unbalanced brackets, deep nesting, wrong types.
const std::vector<std::string> kFragments = {
    "1e308", "-1e308", "1e-320", "NaN", "nan", "Infinity", "-0", "9223372036854775808", "-9223372036854775809",
    "18446744073709551616", "0", "-1", "[]", "{}", "null", "true", "\"\"", "\"\\u0000\"", "[[[[[[[[", "]]]]",
    "{\"a\":", ",", ":", "\"", "\\", std::string(200, '['), std::string(3, '\xff'), "1.0e", "0x10", "[1,2,3]",
};

std::string mutate(std::string s, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> ops(0, 5), count(1, 4);
  const int n = count(rng);
  for (int k = 0; k < n && !s.empty(); ++k) {
    std::uniform_int_distribution<size_t> at(0, s.size() - 1);
    const size_t i = at(rng);
    switch (ops(rng)) {
      case 0: s[i] = static_cast<char>(rng() & 0xff); break;                       // flip a byte
      case 1: s.erase(i, std::min<size_t>(s.size() - i, 1 + rng() % 8)); break;   // delete a run
      case 2: s.insert(i, kFragments[rng() % kFragments.size()]); break;           // insert a fragment
      case 3: s.resize(i); break;                                                   // truncate
      case 4: {                                                                     // replace a number
        const size_t d = s.find_first_of("0123456789", i);
        if (d != std::string::npos) s.replace(d, 1, kFragments[rng() % 10]);
        break;
      }
      default: s.insert(i, s.substr(i, std::min<size_t>(s.size() - i, 1 + rng() % 32)));  // duplicate a run
    }
  }
  return s;
}

// Runs f(input) and fails the test unless it returns or throws c10::Error.
template <class F>
void expect_clean(const std::string& target, uint64_t seed, const std::string& input, F&& f) {
  try {
    f(input);
  } catch (const c10::Error&) {
    // a clear, typed error: fine
  } catch (const std::exception& e) {
    ADD_FAILURE() << target << " (seed " << seed << "): " << typeid(e).name() << " escaped: " << e.what()
                  << "\ninput: " << input.substr(0, 300);
  }
}

template <class F>
void fuzz(const std::string& target, const std::vector<std::string>& corpus, F&& f) {
  const int64_t cases = env_int("FEWSTEP_FUZZ_CASES", kDefaultCases);
  const uint64_t base = static_cast<uint64_t>(env_int("FEWSTEP_FUZZ_SEED", 0));
  for (const std::string& seed_input : corpus) expect_clean(target, 0, seed_input, f);
  for (int64_t i = 0; i < cases && !::testing::Test::HasFailure(); ++i) {
    std::mt19937_64 rng(base + static_cast<uint64_t>(i));
    const std::string input = mutate(corpus[static_cast<size_t>(i) % corpus.size()], rng);
    expect_clean(target, base + static_cast<uint64_t>(i), input, f);
  }
}

TEST(Fuzz, ModelSidecar) {
  // The unmutated sidecar parses (so the mutations start from a valid document).
  const fewstep::ModelFileInfo info = fewstep::parse_model_sidecar(kSidecar, "fuzz sidecar");
  EXPECT_EQ(info.timesteps.size(), 4u);
  fuzz("parse_model_sidecar", {kSidecar}, [](const std::string& text) {
    const fewstep::ModelFileInfo parsed = fewstep::parse_model_sidecar(text, "fuzz sidecar");
    // Whatever parses is usable: a grid that parsed lies inside its schedule's range and decreases.
    for (size_t k = 0; k + 1 < parsed.timesteps.size(); ++k) ASSERT_GT(parsed.timesteps[k], parsed.timesteps[k + 1]);
  });
}

TEST(Fuzz, ScheduleSpec) {
  fuzz("schedule_from_spec", kSchedules, [](const std::string& text) {
    const fewstep::SchedulePtr s = fewstep::schedule_from_spec(text, "fuzz spec");
    // A schedule that parsed has a usable time range and finite coefficients at its ends.
    ASSERT_LT(s->t_min(), s->t_max());
    ASSERT_TRUE(std::isfinite(s->sigma(s->t_min())) && std::isfinite(s->sigma(s->t_max())));
  });
}

TEST(Fuzz, JsonDepthGuardNeverRecurses) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_THROW(fewstep::check_json_depth(deep, "deep"), c10::Error);
  fuzz("check_json_depth", {kSidecar, deep.substr(0, 1000) + deep.substr(0, 1000)},
       [](const std::string& text) { fewstep::check_json_depth(text, "fuzz"); });
}

TEST(Fuzz, OptionValues) {
  // Round trip: every int64 reads back exactly; one past either end is an error, never clamped.
  std::mt19937_64 rng(0);
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = static_cast<int64_t>(rng());
    const fewstep::OptionValue parsed = fewstep::parse_option_value(std::to_string(v));
    ASSERT_TRUE(std::holds_alternative<int64_t>(parsed));
    ASSERT_EQ(std::get<int64_t>(parsed), v);
  }
  EXPECT_THROW(fewstep::parse_option_value("9223372036854775808"), c10::ValueError);
  EXPECT_THROW(fewstep::parse_option_value("-9223372036854775809"), c10::ValueError);
  EXPECT_THROW(fewstep::parse_option_value("99999999999999999999"), c10::ValueError);
  fuzz("parse_option_value", {"order=3", "true", "-12", "0.5", "1e-3", "karras", "9223372036854775807"},
       [](const std::string& text) {
         fewstep::Options o;
         o.set("k", fewstep::parse_option_value(text));
         (void)o.get_int("k", 0);  // a typed getter on a value of another type is a TypeError, not a crash
       });
}

}  // namespace

// Tests of what fewstep writes to and reads from disk: SHA-256, JSON nesting guards, atomic writes
// and their stale temporary files, tensor archives and their checksums, model files (every kind,
// validation before writing, corruption, schema 1), micro sampler files, the teacher-solve cache
// and its keys, and a full disk (a small tmpfs, when the test may mount one).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <optional>
#include <cstdio>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "fewstep/core/atomic_file.h"
#include "fewstep/core/cache_dir.h"
#include "fewstep/core/device.h"
#include "fewstep/core/json_text.h"
#include "fewstep/core/noise.h"
#include "fewstep/core/sha256.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/micro/micro_sampler.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/model_file.h"
#include "fewstep/nets/micro_heads.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/sample/sample.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/schedule_spec.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/schedules/timesteps.h"
#include "test_util.h"

namespace fs = fewstep;
using fewstep::testing::scratch_dir;
using fewstep::testing::value_error_message;
using json = nlohmann::json;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Any c10::Error's message (a test failure if f throws none).
template <class F>
std::string error_message(F f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "no c10::Error thrown";
  return "";
}

fs::SchedulePtr vp() { return std::make_shared<fs::VPLinear>(); }

fs::MlpConfig small_mlp(int64_t dim = 3, int64_t num_classes = 0, bool guidance_input = false) {
  fs::MlpConfig c;
  c.dim = dim;
  c.hidden = 16;
  c.blocks = 1;
  c.time_frequencies = 8;
  c.time_embed_dim = 16;
  c.num_classes = num_classes;
  c.guidance_input = guidance_input;
  return c;
}

fs::ModelFileInfo teacher_info(const fs::MlpConfig& c) {
  fs::ModelFileInfo info;
  info.schedule = vp();
  info.prediction = fs::Prediction::Eps;
  info.sample_shape = {c.dim};
  info.network = fs::network_spec(c);
  info.metadata = R"({"data": {"name": "test"}, "training": {"steps": 3}})";
  return info;
}

// Every parameter of two modules equal, bit for bit.
bool same_weights(const torch::jit::Module& a, const torch::jit::Module& b) {
  std::vector<std::pair<std::string, at::Tensor>> pa, pb;
  for (const auto& p : a.named_parameters(true)) pa.emplace_back(p.name, p.value);
  for (const auto& p : b.named_parameters(true)) pb.emplace_back(p.name, p.value);
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i)
    if (pa[i].first != pb[i].first || !at::equal(pa[i].second, pb[i].second)) return false;
  return true;
}

// Positions to corrupt: every byte of small files, else an even spread plus both ends.
std::vector<size_t> flip_positions(size_t size, size_t count) {
  std::vector<size_t> pos;
  if (size <= count) {
    for (size_t i = 0; i < size; ++i) pos.push_back(i);
    return pos;
  }
  for (size_t k = 0; k < count; ++k) pos.push_back(k * (size - 1) / (count - 1));
  return pos;
}

}  // namespace

// ---------------------------------------------------------------------------------------------- SHA-256

TEST(Sha256, MatchesTheFipsExampleVectors) {
  EXPECT_EQ(fs::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(fs::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(fs::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(fs::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Streaming in odd pieces gives the same digest as one call.
  const std::string text(1000, 'q');
  fs::Sha256 h;
  for (size_t i = 0; i < text.size(); i += 37) h.update(text.data() + i, std::min<size_t>(37, text.size() - i));
  EXPECT_EQ(h.hex_digest(), fs::sha256_hex(text));
  // Fields are length-prefixed: ("ab", "c") and ("a", "bc") differ.
  EXPECT_NE(fs::Sha256().field("ab").field("c").hex_digest(), fs::Sha256().field("a").field("bc").hex_digest());
}

// ---------------------------------------------------------------------------------------------- JSON

TEST(JsonDepth, RefusesDeepNestingAndIgnoresBracketsInStrings) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string msg = value_error_message([&] { fs::check_json_depth(deep, "sidecar 'x.json'"); });
  EXPECT_NE(msg.find("sidecar 'x.json'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("deeper than 64"), std::string::npos) << msg;
  fs::check_json_depth(std::string(64, '[') + std::string(64, ']'), "ok");
  EXPECT_THROW(fs::check_json_depth(std::string(65, '{'), "x"), c10::ValueError);
  fs::check_json_depth(R"({"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"[["})", "ok");
}

// ---------------------------------------------------------------------------------------------- atomic writes

TEST(AtomicWrite, RemovesTheTempFilesOfKilledWritersAndKeepsLiveOnes) {
  const std::string dir = scratch_dir("files", "stale");
  const std::string path = dir + "/checkpoint.pt";
  fs::atomic_write_bytes(path, "v1", 2);
  // A writer killed (SIGKILL) in the middle of its write leaves its temporary file.
  std::fflush(nullptr);  // the child must not repeat buffered output
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    fs::atomic_write(path, [](const std::string& temp) {
      std::ofstream(temp) << "half a checkpoint";
      ::pause();  // killed here
    });
    ::_exit(0);
  }
  struct Reap {  // the child never outlives the test, whatever fails
    explicit Reap(pid_t p) : pid(p) {}
    Reap(const Reap&) = delete;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    pid_t pid;
  };
  std::optional<Reap> reap;
  reap.emplace(child);
  const std::string prefix = fs::atomic_temp_prefix(path);
  auto child_temp = [&]() -> std::string {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string p = e.path().string();
      if (p.rfind(prefix + std::to_string(child) + ".", 0) == 0) return p;
    }
    return "";
  };
  for (int i = 0; i < 500 && child_temp().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const std::string stale = child_temp();
  ASSERT_FALSE(stale.empty());
  reap.reset();  // SIGKILL
  ASSERT_TRUE(std::filesystem::exists(stale));  // left behind, the target untouched
  EXPECT_EQ(read_bytes(path), "v1");

  // A live writer's temporary file (this process's parent: alive) is kept; a lookalike that is not
  // ours is kept too.
  const std::string live = prefix + std::to_string(::getppid()) + ".7";
  const std::string foreign = prefix + "notapid";
  write_bytes(live, "live");
  write_bytes(foreign, "x");
  fs::atomic_write_bytes(path, "v2", 2);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(foreign));
  EXPECT_EQ(read_bytes(path), "v2");
  std::filesystem::remove_all(dir);
}

TEST(AtomicWrite, ReadFileNamesDirectoriesAndMissingFiles) {
  const std::string dir = scratch_dir("files", "read");
  EXPECT_NE(value_error_message([&] { fs::read_file(dir, "sidecar"); }).find("is a directory"), std::string::npos);
  EXPECT_NE(value_error_message([&] { fs::read_file(dir + "/no", "sidecar"); }).find("does not exist"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------- tensor archives

TEST(TensorArchive, EveryFlippedByteIsRefusedOrHarmless) {
  const std::string dir = scratch_dir("files", "archive");
  fs::TensorArchive a;
  a.set_tensor("model/weight", at::randn({64, 16}, fs::testing::generator(0)));
  a.set_tensor("optimizer/exp_avg/0", at::randn({64, 16}, fs::testing::generator(1)).to(at::kDouble));
  a.set_int("step", 1234);
  a.set_string("config", R"({"lr": 0.001})");
  const std::string path = dir + "/checkpoint.pt";
  a.save(path);
  const fs::TensorArchive back = fs::TensorArchive::load(path);
  EXPECT_EQ(back.digest(), a.digest());
  const std::string good = read_bytes(path);
  const std::string bad_path = dir + "/flipped.pt";
  int refused = 0, identical = 0, silent = 0;
  for (size_t p : flip_positions(good.size(), 400)) {
    std::string bytes = good;
    bytes[p] = static_cast<char>(bytes[p] ^ 0x5a);
    write_bytes(bad_path, bytes);
    try {
      const fs::TensorArchive c = fs::TensorArchive::load(bad_path);
      (c.digest() == a.digest() ? identical : silent) += 1;
      if (c.digest() != a.digest()) ADD_FAILURE() << "a flip at byte " << p << " loaded changed content";
    } catch (const c10::Error& e) {
      ++refused;
      EXPECT_NE(std::string(e.what_without_backtrace()).find(bad_path), std::string::npos);
    }
  }
  std::cerr << "[archive flips] " << good.size() << " bytes: " << refused << " refused, " << identical
            << " harmless (identical content), " << silent << " silent\n";
  EXPECT_EQ(silent, 0);
  EXPECT_GT(refused, 0);
  // The reserved key cannot be set by a writer.
  EXPECT_THROW(a.set_string(fs::TensorArchive::kChecksumKey, "x"), c10::ValueError);
  EXPECT_THROW(a.set_int(fs::TensorArchive::kChecksumCopyKey, 1), c10::ValueError);
  // A directory or a truncated file is named.
  EXPECT_NE(value_error_message([&] { fs::TensorArchive::load(dir); }).find("is a directory"), std::string::npos);
  write_bytes(bad_path, good.substr(0, good.size() / 2));
  EXPECT_NE(value_error_message([&] { fs::TensorArchive::load(bad_path); }).find(bad_path), std::string::npos);
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------- model files

TEST(ModelFile, TeacherRoundTripsWithChecksumsAndFingerprint) {
  const std::string dir = scratch_dir("files", "teacher");
  const fs::MlpConfig c = small_mlp();
  const fs::ScriptNet net = fs::make_mlp(c, 1);
  const std::string path = dir + "/teacher.pt";
  const json side = json::parse(fs::save_model_file(path, *net, teacher_info(c)));
  EXPECT_EQ(side["format"], fs::kModelFileFormat);
  EXPECT_EQ(side["schema"], fs::kModelFileSchema);
  EXPECT_EQ(side["model_sha256"], fs::sha256_file(path));
  EXPECT_EQ(side["parameters"], fs::parameter_count(*net));
  EXPECT_EQ(side["data"]["name"], "test");
  EXPECT_EQ(json::parse(read_bytes(fs::model_sidecar_path(path))), side);

  const fs::ModelFile f = fs::load_model_file(path);
  EXPECT_EQ(f.info.schema, 2);
  EXPECT_EQ(f.sample_shape, std::vector<int64_t>{3});
  EXPECT_EQ(f.prediction, fs::Prediction::Eps);
  EXPECT_EQ(f.name, "teacher");
  EXPECT_TRUE(f.timesteps.empty());
  EXPECT_TRUE(same_weights(*f.network, *net));
  // The Denoiser is the network read as an eps prediction.
  const at::Tensor x = at::randn({4, 3}, fs::testing::generator(2));
  const auto from_file = f.denoiser(x, 0.5);
  const fs::Denoiser direct(
      [net](const at::Tensor& xx, const at::Tensor& t) { return fs::forward_network(*net, xx, t, {}, {}, "net"); },
      vp(), fs::Prediction::Eps);
  EXPECT_TRUE(at::equal(from_file.x0, direct(x, 0.5).x0));
  // The fingerprint is the content's: a second load agrees, and it does not depend on the path.
  ASSERT_TRUE(f.denoiser.fingerprint().has_value());
  EXPECT_EQ(f.denoiser.fingerprint(), fs::load_model_file(path).denoiser.fingerprint());
  std::filesystem::copy_file(path, dir + "/copy.pt");
  std::filesystem::copy_file(fs::model_sidecar_path(path), dir + "/copy.json");
  EXPECT_EQ(f.denoiser.fingerprint(), fs::load_model_file(dir + "/copy.pt").denoiser.fingerprint());
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, StudentGridConditionalGuidedAndConsistencyKindsRoundTrip) {
  const std::string dir = scratch_dir("files", "kinds");
  auto schedule = vp();
  const at::Tensor x = at::randn({2, 3}, fs::testing::generator(3));

  // A progressive-distillation student: its own grid and solver.
  {
    const fs::MlpConfig c = small_mlp();
    fs::ModelFileInfo info = teacher_info(c);
    info.prediction = fs::Prediction::V;
    info.timesteps = fs::timesteps(*schedule, 2, "time");
    info.solver = "ddim";
    fs::save_model_file(dir + "/pd-2step.pt", *fs::make_mlp(c, 2), info);
    const fs::ModelFile f = fs::load_model_file(dir + "/pd-2step.pt");
    EXPECT_EQ(f.timesteps, info.timesteps);
    EXPECT_EQ(f.solver, "ddim");
    EXPECT_EQ(f.prediction, fs::Prediction::V);
    EXPECT_EQ(fs::sample(f.denoiser, x, *fs::solver(f.solver), f.timesteps).nfe, 2);
  }
  // A class-conditional teacher: labels and classifier-free guidance from the file.
  {
    const fs::MlpConfig c = small_mlp(3, 4);
    const fs::ScriptNet net = fs::make_mlp(c, 3);
    fs::save_model_file(dir + "/cond.pt", *net, teacher_info(c));
    const fs::ModelFile f = fs::load_model_file(dir + "/cond.pt");
    EXPECT_EQ(f.num_classes, 4);
    fs::ModelConditioning cond;
    cond.labels = at::full({1}, 2, at::kLong);
    const auto labelled = f.conditioned(cond);
    const at::Tensor t = at::full({2}, 0.5, at::kFloat);
    const at::Tensor expect = fs::forward_network(*net, x, t, at::full({2}, 2, at::kLong), {}, "net");
    EXPECT_TRUE(at::allclose(labelled(x, 0.5).eps, expect));
    cond.guidance = 3.0;
    EXPECT_NE(f.conditioned(cond).fingerprint(), labelled.fingerprint());  // the conditioning is in the identity
    EXPECT_EQ(f.file_fingerprint(), fs::load_model_file(dir + "/cond.pt").file_fingerprint());
    EXPECT_NE(value_error_message([&] {
                fs::ModelConditioning bad;
                bad.labels = at::full({1}, 4, at::kLong);
                f.conditioned(bad);
              }).find("[0, 4)"),
              std::string::npos);
  }
  // A guidance-distilled student: takes w, with the file's default guidance.
  {
    const fs::MlpConfig c = small_mlp(3, 4, /*guidance_input=*/true);
    fs::ModelFileInfo info = teacher_info(c);
    info.default_guidance = 2.5;
    fs::save_model_file(dir + "/guided.pt", *fs::make_mlp(c, 4), info);
    const fs::ModelFile f = fs::load_model_file(dir + "/guided.pt");
    EXPECT_TRUE(f.guidance_input);
    EXPECT_EQ(f.info.default_guidance, 2.5);
    EXPECT_TRUE(at::isfinite(f.denoiser(x, 0.5).x0).all().item<bool>());
  }
  // A consistency model: the file holds F, the Denoiser is f = c_skip x + c_out F(c_in x, t).
  {
    const fs::MlpConfig c = small_mlp();
    const fs::ScriptNet net = fs::make_mlp(c, 5);
    fs::ModelFileInfo info = teacher_info(c);
    info.prediction = fs::Prediction::X0;
    info.consistency = fs::ModelConsistency{0.5, schedule->t_min()};
    info.timesteps = {schedule->t_max(), schedule->t_min()};
    info.solver = "consistency";
    fs::save_model_file(dir + "/cd-1step.pt", *net, info);
    const fs::ModelFile f = fs::load_model_file(dir + "/cd-1step.pt");
    ASSERT_TRUE(f.info.consistency.has_value());
    fs::ConsistencyParameterization p;
    p.sigma_data = 0.5;
    p.t_min = schedule->t_min();
    const fs::Denoiser direct = fs::consistency_denoiser(net, schedule, p);
    EXPECT_TRUE(at::allclose(f.denoiser(x, 0.5).x0, direct(x, 0.5).x0));
    info.prediction = fs::Prediction::Eps;  // a consistency model predicts x0
    EXPECT_NE(value_error_message([&] { fs::save_model_file(dir + "/bad.pt", *net, info); }).find("predicts x0"),
              std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, AnyScheduleFamilyRoundTripsThroughItsSpec) {
  const std::vector<fs::SchedulePtr> schedules = {
      std::make_shared<fs::VPLinear>(0.1, 19.5, 2e-3, 0.99), std::make_shared<fs::VPCosine>(),
      fs::VPDiscrete::ddpm_linear(50), std::make_shared<fs::VE>(0.01, 50.0), std::make_shared<fs::FlowMatching>()};
  for (const auto& s : schedules) {
    const fs::SchedulePtr back = fs::schedule_from_spec(fs::schedule_spec(*s));
    for (double f : {0.0, 0.3, 0.77, 1.0}) {
      const double t = s->t_min() + f * (s->t_max() - s->t_min());
      EXPECT_EQ(back->alpha(t), s->alpha(t)) << s->repr();
      EXPECT_EQ(back->sigma(t), s->sigma(t)) << s->repr();
    }
  }
}

TEST(ModelFile, InvalidExportsAreRefusedBeforeAnythingIsWritten) {
  const std::string dir = scratch_dir("files", "validate");
  const fs::MlpConfig c = small_mlp();
  const fs::ScriptNet good_net = fs::make_mlp(c, 6), other_net = fs::make_mlp(c, 7);
  const std::string path = dir + "/student.pt";
  fs::ModelFileInfo good = teacher_info(c);
  good.timesteps = fs::timesteps(*vp(), 4, "time");
  fs::save_model_file(path, *good_net, good);
  const std::string pt = read_bytes(path), side = read_bytes(fs::model_sidecar_path(path));

  std::vector<std::pair<std::string, std::function<void(fs::ModelFileInfo&)>>> cases = {
      {"strictly decreasing", [](fs::ModelFileInfo& i) { i.timesteps = {0.1, 0.5, 1.0}; }},
      {"must be finite", [](fs::ModelFileInfo& i) { i.timesteps = {1.0, NAN, 0.001}; }},
      {"outside [t_min, t_max]", [](fs::ModelFileInfo& i) { i.timesteps = {5.0, 0.001}; }},
      {"sample_shape entries must be positive", [](fs::ModelFileInfo& i) { i.sample_shape = {0}; }},
      {"non-empty list", [](fs::ModelFileInfo& i) { i.sample_shape = {}; }},
      {"cannot run on one sample", [](fs::ModelFileInfo& i) { i.sample_shape = {5}; }},
      {"must not set \"model_sha256\"", [](fs::ModelFileInfo& i) { i.metadata = R"({"model_sha256": "x"})"; }},
      {"metadata is not JSON", [](fs::ModelFileInfo& i) { i.metadata = "{nope"; }},
      {"deeper than 64", [](fs::ModelFileInfo& i) { i.metadata = "{\"a\": " + std::string(100000, '[') + "}"; }},
      {"needs timesteps", [](fs::ModelFileInfo& i) { i.timesteps.clear(); i.solver = "ddim"; }},
      {"schedule must be set", [](fs::ModelFileInfo& i) { i.schedule = nullptr; }},
      {"time_scale must be finite", [](fs::ModelFileInfo& i) { i.time_scale = INFINITY; }},
  };
  for (auto& [expect, edit] : cases) {
    fs::ModelFileInfo bad = good;
    edit(bad);
    const std::string msg = value_error_message([&] { fs::save_model_file(path, *other_net, bad); });
    EXPECT_NE(msg.find(expect), std::string::npos) << "expected '" << expect << "' in: " << msg;
    // The previous good student is intact, byte for byte, and nothing else was left behind.
    EXPECT_EQ(read_bytes(path), pt);
    EXPECT_EQ(read_bytes(fs::model_sidecar_path(path)), side);
    EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"student.json", "student.pt"}));
  }
  EXPECT_NE(value_error_message([&] { fs::save_model_file(dir + "/none/x.pt", *good_net, good); })
                .find("does not exist"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fs::save_model_file(dir + "/x.json", *good_net, good); }).find("own sidecar"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, CorruptedTornAndDeepFilesAreErrorsNamingTheFile) {
  const std::string dir = scratch_dir("files", "corrupt");
  const fs::MlpConfig c = small_mlp();
  const std::string path = dir + "/m.pt", side_path = fs::model_sidecar_path(path);
  fs::save_model_file(path, *fs::make_mlp(c, 8), teacher_info(c));
  const std::string pt = read_bytes(path), side = read_bytes(side_path);

  // Any flipped byte of the .pt: its SHA-256 no longer matches the sidecar's.
  int refused = 0;
  for (size_t p : flip_positions(pt.size(), 200)) {
    std::string bytes = pt;
    bytes[p] = static_cast<char>(bytes[p] ^ 0x5a);
    write_bytes(path, bytes);
    const std::string msg = value_error_message([&] { fs::load_model_file(path); });
    refused += msg.find("is corrupted or was replaced") != std::string::npos && msg.find(path) != std::string::npos;
  }
  EXPECT_EQ(refused, 200);
  write_bytes(path, pt);
  // Any flipped byte of the sidecar: invalid JSON, or its own checksum fails.
  refused = 0;
  const auto side_flips = flip_positions(side.size(), 200);
  for (size_t p : side_flips) {
    std::string bytes = side;
    bytes[p] = static_cast<char>(bytes[p] ^ 0x5a);
    write_bytes(side_path, bytes);
    const std::string msg = value_error_message([&] { fs::load_model_file(path); });
    refused += msg.find(side_path) != std::string::npos;
  }
  EXPECT_EQ(refused, static_cast<int>(side_flips.size()));
  // A torn pair (a new .pt, the old sidecar) is refused, not mixed.
  write_bytes(side_path, side);
  fs::save_network(*fs::make_mlp(c, 9), path);
  EXPECT_NE(value_error_message([&] { fs::load_model_file(path); }).find("is corrupted or was replaced"),
            std::string::npos);
  write_bytes(path, pt);
  EXPECT_NO_THROW(fs::load_model_file(path));
  // 100 000 nested arrays in the sidecar: an error naming it, not a stack overflow.
  json meta = json::parse(side);
  const std::string deep = side.substr(0, side.rfind('}')) + ", \"x\": " + std::string(100000, '[') +
                           std::string(100000, ']') + "}";
  write_bytes(side_path, deep);
  std::string msg = value_error_message([&] { fs::load_model_file(path); });
  EXPECT_NE(msg.find(side_path), std::string::npos) << msg;
  EXPECT_NE(msg.find("deeper than"), std::string::npos) << msg;
  // A newer schema and a foreign format are named.
  meta["schema"] = 3;
  write_bytes(side_path, meta.dump());
  msg = value_error_message([&] { fs::load_model_file(path); });
  EXPECT_NE(msg.find("newer fewstep"), std::string::npos) << msg;
  meta["format"] = "fewstep.classifier.v1";
  write_bytes(side_path, meta.dump());
  EXPECT_NE(value_error_message([&] { fs::load_model_file(path); }).find("not a fewstep model sidecar"),
            std::string::npos);
  // A directory where the sidecar should be.
  std::filesystem::remove(side_path);
  std::filesystem::create_directory(side_path);
  EXPECT_NE(value_error_message([&] { fs::load_model_file(path); }).find("is a directory"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, SchemaOneSidecarsLoadAndUpgradeWithTheLibrary) {
  const std::string dir = scratch_dir("files", "schema1");
  const fs::MlpConfig c = small_mlp();
  const fs::ScriptNet net = fs::make_mlp(c, 10);
  const std::string path = dir + "/old.pt";
  fs::save_network(*net, path);
  // A sidecar as `fewstep train` wrote them before the checksum (format "fewstep.model.v1").
  const json v1 = {{"format", "fewstep.model.v1"},
                   {"name", "old"},
                   {"model", "old.pt"},
                   {"schedule", {{"name", "vp_linear"}, {"beta_min", 0.1}, {"beta_max", 20.0}, {"repr", "VPLinear"}}},
                   {"prediction", "eps"},
                   {"time_input", "t"},
                   {"time_scale", 1.0},
                   {"sample_shape", {3}},
                   {"network", json::parse(fs::network_spec(c))},
                   {"parameters", fs::parameter_count(*net)},
                   {"data", {{"name", "gmm2d"}}},
                   {"fewstep_version", "0.1.0"}};
  write_bytes(fs::model_sidecar_path(path), v1.dump(2));
  const fs::ModelFile f = fs::load_model_file(path);
  EXPECT_EQ(f.info.schema, 1);
  EXPECT_TRUE(f.info.model_sha256.empty());
  EXPECT_TRUE(f.denoiser.fingerprint().has_value());  // content-hashed on load all the same
  const at::Tensor x = at::randn({2, 3}, fs::testing::generator(4));

  const json up = json::parse(fs::upgrade_model_file(path));
  EXPECT_EQ(up["schema"], 2);
  EXPECT_EQ(up["model_sha256"], fs::sha256_file(path));
  EXPECT_EQ(up["fewstep_version"], "0.1.0");  // the writer's record is kept
  EXPECT_EQ(up["data"]["name"], "gmm2d");
  const fs::ModelFile g = fs::load_model_file(path);
  EXPECT_EQ(g.info.schema, 2);
  EXPECT_TRUE(at::equal(g.denoiser(x, 0.3).x0, f.denoiser(x, 0.3).x0));
  // From now on the .pt is verified.
  std::string bytes = read_bytes(path);
  bytes[bytes.size() / 2] ^= 1;
  write_bytes(path, bytes);
  EXPECT_THROW(fs::load_model_file(path), c10::ValueError);
  EXPECT_NE(value_error_message([&] { fs::upgrade_model_file(path); }).find("does not match"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, StudentsInheritTheTeachersDataButNotItsOwnRecords) {
  const json teacher = {{"data", {{"name", "fmnist"}}},
                        {"training", {{"steps_done", 12000}}},
                        {"evaluation", {{"fd_fmnist", 11.24}}},
                        {"distillation", {{"method", "progressive"}}}};
  const json student =
      json::parse(fs::student_metadata(teacher.dump(), json{{"method", "kd"}, {"teacher", "t.pt"}}.dump()));
  EXPECT_EQ(student, (json{{"data", {{"name", "fmnist"}}}, {"distillation", {{"method", "kd"}, {"teacher", "t.pt"}}}}));
  EXPECT_NE(value_error_message([&] { fs::student_metadata("[1]", "{}"); })
                .find("teacher_metadata must be a JSON object, got '[1]'"),
            std::string::npos);
  EXPECT_NE(value_error_message([&] { fs::student_metadata("{}", "nope"); }).find("distillation must be a JSON object"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------- micro sampler files

TEST(MicroSamplerFile, RoundTripsAndRefusesFlippedBytes) {
  const std::string dir = scratch_dir("files", "micro");
  auto schedule = vp();
  const fs::Denoiser teacher = fs::Denoiser::exact(fs::GaussianMixture::random(4, 3, 5), schedule);
  fs::MicroSamplerInfo info;
  info.mode = fs::MicroMode::Residual;
  info.heads.sample_shape = {4};
  info.heads.width = 16;
  info.heads.blocks = 1;
  info.t_start = schedule->t_max();
  info.t_end = schedule->t_min();
  info.teacher = "mixture(4, 3, 5)";
  info.schedule = schedule->repr();
  const fs::MicroSampler sampler(fs::make_residual_head(info.heads, 1), nullptr, info,
                                 fs::MicroSampler::probe_teacher(teacher, info));
  const std::string path = dir + "/micro.pt";
  sampler.save(path);
  const auto loaded = fs::MicroSampler::load(path);
  EXPECT_TRUE(same_weights(*loaded->residual(), *sampler.residual()));
  EXPECT_EQ(loaded->info().teacher, info.teacher);
  const at::Tensor x_T = at::randn({3, 4}, fs::testing::generator(5));
  EXPECT_TRUE(at::equal(loaded->sample(teacher, x_T, 4).x, sampler.sample(teacher, x_T, 4).x));

  const std::string good = read_bytes(path);
  int refused = 0, identical = 0, silent = 0;
  for (size_t p : flip_positions(good.size(), 300)) {
    std::string bytes = good;
    bytes[p] = static_cast<char>(bytes[p] ^ 0x5a);
    write_bytes(path, bytes);
    try {
      const auto c = fs::MicroSampler::load(path);
      const bool same = same_weights(*c->residual(), *sampler.residual()) && at::equal(c->teacher_probe(),
                                                                                        sampler.teacher_probe()) &&
                        fs::micro_sampler_info_json(c->info()) == fs::micro_sampler_info_json(info) &&
                        at::equal(c->sample(teacher, x_T, 4).x, sampler.sample(teacher, x_T, 4).x);
      (same ? identical : silent) += 1;
      if (!same) ADD_FAILURE() << "a flip at byte " << p << " of the micro sampler loaded a different sampler";
    } catch (const c10::Error& e) {
      ++refused;
      EXPECT_NE(std::string(e.what_without_backtrace()).find(path), std::string::npos) << e.what_without_backtrace();
    }
  }
  std::cerr << "[micro sampler flips] " << good.size() << " bytes: " << refused << " refused, " << identical
            << " harmless, " << silent << " silent\n";
  EXPECT_EQ(silent, 0);
  EXPECT_GT(refused, 0);
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------- teacher cache

namespace {

fs::TeacherSolveSpec small_solve(int64_t n = 6) {
  fs::TeacherSolveSpec spec;
  spec.sample_shape = {3};
  spec.n = n;
  spec.batch = 4;
  spec.seed = 100;
  spec.solver = "ddim";
  spec.grid = fs::timesteps(*vp(), 8, "logsnr");
  spec.progress = false;
  return spec;
}

}  // namespace

TEST(TeacherCache, ReusesMatchingSolvesAndRecomputesOthers) {
  const std::string root = scratch_dir("files", "cache");
  const fs::Denoiser teacher = fs::Denoiser::exact(fs::GaussianMixture::random(3, 4, 0), vp());
  fs::TeacherSolveSpec spec = small_solve();
  const fs::TeacherSolve a = fs::teacher_solve(teacher, spec, root);
  EXPECT_FALSE(a.from_cache);
  EXPECT_EQ(a.cache_file.rfind(fs::teacher_cache_dir(root), 0), 0u);
  EXPECT_EQ(a.nfe, 8);
  // x_T is randn_per_sample's draw: the x_T of fs.randn and `fewstep sample --seed`.
  std::vector<uint64_t> seeds;
  for (int i = 0; i < 6; ++i) seeds.push_back(100 + i);
  EXPECT_TRUE(at::equal(a.x_T(), fs::randn_per_sample({3}, seeds, at::TensorOptions().dtype(at::kFloat))));
  const fs::TeacherSolve b = fs::teacher_solve(teacher, spec, root);
  EXPECT_TRUE(b.from_cache);
  EXPECT_TRUE(at::equal(a.x, b.x));
  EXPECT_EQ(a.key, b.key);
  // The key lives in the file.
  EXPECT_EQ(fs::load_teacher_solve(a.cache_file).key, a.key);
  // Other settings are other solves; sample i depends only on seed + i, not on n or the batching.
  spec.n = 4;
  spec.batch = 3;
  const fs::TeacherSolve c = fs::teacher_solve(teacher, spec, root);
  EXPECT_FALSE(c.from_cache);
  EXPECT_TRUE(at::equal(c.x_T(), a.x_T().narrow(0, 0, 4)));
  EXPECT_TRUE(at::allclose(c.x_end(), a.x_end().narrow(0, 0, 4), 1e-6, 1e-6));
  spec = small_solve();
  spec.solver = "euler";
  EXPECT_FALSE(fs::teacher_solve(teacher, spec, root).from_cache);
  // A damaged cache file is recomputed, with a note.
  std::string bytes = read_bytes(a.cache_file);
  bytes[bytes.size() / 3] ^= 0x5a;
  write_bytes(a.cache_file, bytes);
  const fs::TeacherSolve d = fs::teacher_solve(teacher, small_solve(), root);
  EXPECT_FALSE(d.from_cache);
  EXPECT_NE(d.note.find("recomputed"), std::string::npos);
  EXPECT_TRUE(at::equal(d.x, a.x));
  std::filesystem::remove_all(root);
}

TEST(TeacherCache, ARetrainedTeacherAtTheSamePathNeverGetsTheOldSolves) {
  const std::string root = scratch_dir("files", "retrained");
  const fs::MlpConfig c = small_mlp();
  const std::string path = root + "/teacher.pt";
  fs::save_model_file(path, *fs::make_mlp(c, 11), teacher_info(c));
  const auto size_before = std::filesystem::file_size(path);
  const fs::TeacherSolve old = fs::teacher_solve(fs::load_model_file(path).denoiser, small_solve(), root);
  EXPECT_TRUE(fs::teacher_solve(fs::load_model_file(path).denoiser, small_solve(), root).from_cache);
  // Retrained: same architecture, same path, same size, other weights.
  fs::save_model_file(path, *fs::make_mlp(c, 12), teacher_info(c));
  ASSERT_EQ(std::filesystem::file_size(path), size_before);
  const fs::TeacherSolve fresh = fs::teacher_solve(fs::load_model_file(path).denoiser, small_solve(), root);
  EXPECT_FALSE(fresh.from_cache);
  EXPECT_TRUE(at::equal(fresh.x_T(), old.x_T()));
  EXPECT_FALSE(at::allclose(fresh.x_end(), old.x_end()));
  std::filesystem::remove_all(root);
}

TEST(TeacherCache, NetworksAreKeyedByTheirFingerprintAndRefusedWithoutOne) {
  const std::string root = scratch_dir("files", "fingerprint");
  auto net = [](double scale) {
    return [scale](const at::Tensor& x, const at::Tensor&) { return x * scale; };
  };
  // Same description ("Denoiser(network, ...)"), different content.
  const fs::Denoiser a(net(0.1), vp(), fs::Prediction::Eps, fs::TimeInput::T, 1.0, [] { return "a"; });
  const fs::Denoiser b(net(0.2), vp(), fs::Prediction::Eps, fs::TimeInput::T, 1.0, [] { return "b"; });
  ASSERT_EQ(a.description(), b.description());
  const fs::TeacherSolve sa = fs::teacher_solve(a, small_solve(), root);
  const fs::TeacherSolve sb = fs::teacher_solve(b, small_solve(), root);
  EXPECT_FALSE(sb.from_cache);
  EXPECT_FALSE(at::allclose(sa.x_end(), sb.x_end()));
  EXPECT_TRUE(fs::teacher_solve(a, small_solve(), root).from_cache);
  // The prediction is part of a network's identity.
  const fs::Denoiser a_x0(net(0.1), vp(), fs::Prediction::X0, fs::TimeInput::T, 1.0, [] { return "a"; });
  EXPECT_NE(a_x0.fingerprint(), a.fingerprint());
  // Without a fingerprint: solved, never cached.
  const fs::Denoiser anonymous(net(0.1), vp(), fs::Prediction::Eps);
  EXPECT_FALSE(anonymous.fingerprint().has_value());
  const std::string msg = value_error_message([&] { fs::teacher_solve(anonymous, small_solve(), root); });
  EXPECT_NE(msg.find("fingerprint"), std::string::npos) << msg;
  EXPECT_TRUE(fs::teacher_solve(anonymous, small_solve(), "").cache_file.empty());
  // Exact mixtures are keyed by their parameters; TorchScript files by their bytes.
  const auto m1 = fs::Denoiser::exact(fs::GaussianMixture::random(3, 4, 0), vp());
  const auto m2 = fs::Denoiser::exact(fs::GaussianMixture::random(3, 4, 1), vp());
  EXPECT_EQ(m1.fingerprint(), fs::Denoiser::exact(fs::GaussianMixture::random(3, 4, 0), vp()).fingerprint());
  EXPECT_NE(m1.fingerprint(), m2.fingerprint());
  EXPECT_NE(m1.fingerprint(), fs::Denoiser::exact(fs::GaussianMixture::random(3, 4, 0),
                                                  std::make_shared<fs::VPLinear>(0.1, 19.0))
                                  .fingerprint());
  fs::save_network(*fs::make_mlp(small_mlp(), 1), root + "/a.pt");
  fs::save_network(*fs::make_mlp(small_mlp(), 2), root + "/b.pt");
  EXPECT_NE(fs::Denoiser::torchscript(root + "/a.pt", vp(), fs::Prediction::Eps).fingerprint(),
            fs::Denoiser::torchscript(root + "/b.pt", vp(), fs::Prediction::Eps).fingerprint());
  // A stochastic solver is refused; keep_eps needs one evaluation per step.
  fs::TeacherSolveSpec spec = small_solve();
  spec.solver = "euler_maruyama";
  EXPECT_NE(value_error_message([&] { fs::teacher_solve(m1, spec); }).find("stochastic"), std::string::npos);
  spec = small_solve();
  spec.solver = "heun";
  spec.keep_eps = true;
  EXPECT_NE(value_error_message([&] { fs::teacher_solve(m1, spec); }).find("keep_eps"), std::string::npos);
  std::filesystem::remove_all(root);
}

TEST(TeacherCache, DenseSolveKeepsKnotsAndTheTeachersEps) {
  auto schedule = vp();
  const fs::Denoiser teacher = fs::Denoiser::exact(fs::GaussianMixture::random(3, 4, 0), schedule);
  fs::TeacherSolveSpec spec = small_solve(5);
  spec.solver = "deis";
  spec.keep_every = 4;
  spec.keep_eps = true;
  spec.dtype = at::kDouble;
  const fs::TeacherSolve s = fs::teacher_solve(teacher, spec);
  ASSERT_EQ(s.x.sizes(), (std::vector<int64_t>{5, 3, 3}));
  ASSERT_EQ(s.eps.sizes(), (std::vector<int64_t>{5, 2, 3}));
  EXPECT_EQ(s.times, (std::vector<double>{spec.grid[0], spec.grid[4], spec.grid[8]}));
  // ε̂ at a knot is the teacher's at that knot's x.
  for (int j = 0; j < 2; ++j)
    EXPECT_TRUE(at::allclose(s.eps.select(1, j), teacher(s.x.select(1, j), s.times[j]).eps, 1e-10, 1e-10));
  // The end is the plain solve's.
  EXPECT_TRUE(at::equal(s.x_end(), fs::sample(teacher, s.x_T().clone(), *fs::solver("deis"), spec.grid).x));
  EXPECT_NE(value_error_message([&] {
              fs::TeacherSolveSpec bad = spec;
              bad.keep_every = 3;
              fs::teacher_solve(teacher, bad);
            }).find("keep_every"),
            std::string::npos);
}

TEST(CacheDirectory, FollowsTheEnvironmentPolicy) {
  const char* saved[3] = {std::getenv("FEWSTEP_CACHE_DIR"), std::getenv("XDG_CACHE_HOME"), std::getenv("HOME")};
  const std::string keep[3] = {saved[0] ? saved[0] : "", saved[1] ? saved[1] : "", saved[2] ? saved[2] : ""};
  ::setenv("FEWSTEP_CACHE_DIR", "/a/cache", 1);
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(fs::cache_directory(), "/a/cache");
  EXPECT_EQ(fs::cache_directory("teacher-solves"), "/a/cache/teacher-solves");
  ::unsetenv("FEWSTEP_CACHE_DIR");
  EXPECT_EQ(fs::cache_directory(), "/xdg/fewstep");
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(fs::cache_directory(), "/home/u/.cache/fewstep");
  const char* names[3] = {"FEWSTEP_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
  for (int i = 0; i < 3; ++i) {
    if (saved[i]) ::setenv(names[i], keep[i].c_str(), 1);
    else ::unsetenv(names[i]);
  }
}

// ---------------------------------------------------------------------------------------------- full disk

// A tmpfs of 256 KiB: every writer fails with an error naming its file, leaves no temporary file
// and the previous file whole. Needs root (mount); skipped otherwise.
TEST(FullDisk, WritersFailCleanlyOnASmallTmpfs) {
  const std::string dir = scratch_dir("files", "fulldisk");
  if (::geteuid() != 0 || ::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=256k") != 0) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "needs root to mount a tmpfs";
  }
  struct Unmount {
    std::string dir;
    ~Unmount() {
      ::umount(dir.c_str());
      std::filesystem::remove_all(dir);
    }
  } unmount{dir};
  // A small model fits; a large one does not.
  fs::MlpConfig small = small_mlp();
  const std::string path = dir + "/model.pt";
  fs::save_model_file(path, *fs::make_mlp(small, 1), teacher_info(small));
  const std::string pt = read_bytes(path), side = read_bytes(fs::model_sidecar_path(path));
  fs::MlpConfig large = small;
  large.hidden = 256;  // ~0.5 MB of weights
  std::string msg = error_message([&] { fs::save_model_file(path, *fs::make_mlp(large, 2), teacher_info(large)); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("No space left on device"), std::string::npos) << msg;
  EXPECT_EQ(read_bytes(path), pt);
  EXPECT_EQ(read_bytes(fs::model_sidecar_path(path)), side);
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"model.json", "model.pt"}));
  EXPECT_NO_THROW(fs::load_model_file(path));
  // A checkpoint (tensor archive) and a micro sampler file.
  fs::TensorArchive big;
  big.set_tensor("w", at::zeros({200000}));
  msg = error_message([&] { big.save(dir + "/checkpoint.pt"); });
  EXPECT_NE(msg.find(dir + "/checkpoint.pt"), std::string::npos) << msg;
  msg = error_message([&] { fs::save_network(*fs::make_mlp(large, 3), dir + "/net.pt"); });
  EXPECT_NE(msg.find(dir + "/net.pt"), std::string::npos) << msg;
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"model.json", "model.pt"}));
}

// ------------------------------------------------------------------------------ device and dtype placement

TEST(Placement, ParsesDevicesAndDtypesAndNamesBadValues) {
  EXPECT_EQ(fs::parse_device("cpu"), at::Device(at::kCPU));
  EXPECT_EQ(fs::parse_dtype("float32"), at::kFloat);
  EXPECT_EQ(fs::parse_dtype("torch.float64"), at::kDouble);  // str(torch.float64)
  EXPECT_EQ(fs::parse_dtype("double"), at::kDouble);
  EXPECT_EQ(fs::dtype_name(at::kDouble), "float64");
  EXPECT_TRUE(fs::parse_placement("", "").empty());
  for (const char* bad : {"gpu", "cuda:x", "mps", "CPU", ""}) {
    const std::string msg = value_error_message([&] { fs::parse_device(bad, "--device"); });
    EXPECT_NE(msg.find(std::string("--device must be 'cpu', 'cuda' or 'cuda:N', got '") + bad + "'"), std::string::npos)
        << msg;
  }
  for (const char* bad : {"int8", "float16", "bfloat16", "torch.half"}) {
    const std::string msg = value_error_message([&] { fs::parse_dtype(bad, "--dtype"); });
    EXPECT_NE(msg.find(std::string("--dtype must be 'float32' or 'float64', got '") + bad + "'"), std::string::npos)
        << msg;
  }
  if (!fs::cuda_available()) {
    for (const char* cuda : {"cuda", "cuda:0", "cuda:3"}) {
      const std::string msg = value_error_message([&] { fs::parse_device(cuda, "--device"); });
      EXPECT_NE(msg.find(std::string("--device '") + cuda + "': CUDA is not available in this build or on this machine"),
                std::string::npos)
          << msg;
    }
  }
}

TEST(Placement, ModelFileLoadsInFloat64AndAgreesWithFloat32) {
  const std::string dir = scratch_dir("files", "placement");
  const fs::MlpConfig c = small_mlp();
  const std::string path = dir + "/model.pt";
  fs::save_model_file(path, *fs::make_mlp(c, 4), teacher_info(c));
  fs::Placement p64;
  p64.device = at::Device(at::kCPU);
  p64.dtype = at::kDouble;
  const fs::ModelFile f64 = fs::load_model_file(path, {}, p64);
  const fs::ModelFile f32 = fs::load_model_file(path);
  EXPECT_EQ(f64.sha256, f32.sha256);  // the file as written, whatever the placement
  const at::Tensor x = at::randn({64, 3}, fs::testing::generator(5), at::kDouble);
  const auto grid = fs::timesteps(*f32.schedule, 8, "logsnr");
  const at::Tensor y64 = fs::sample(f64.denoiser, x, *fs::solver("dpmpp_2m"), grid).x;
  const at::Tensor y32 = fs::sample(f32.denoiser, x.to(at::kFloat), *fs::solver("dpmpp_2m"), grid).x;
  ASSERT_EQ(y64.scalar_type(), at::kDouble);
  ASSERT_EQ(y32.scalar_type(), at::kFloat);
  // float32 round-off u = 2^-24 per operation; evaluations of a width-16 MLP and 8 solver steps whose
  // gain is of order one: 8 steps x 256 u x max|y| bounds the difference (tests/python/test_device.py).
  const double tol = 8 * 256 * std::ldexp(1.0, -24) * y64.abs().max().item<double>();
  const double diff = (y64 - y32.to(at::kDouble)).abs().max().item<double>();
  EXPECT_GT(diff, 0.0);
  EXPECT_LE(diff, tol);
  // Denoiser::torchscript takes the same placement.
  const fs::Denoiser d = fs::Denoiser::torchscript(path, f32.schedule, f32.prediction, fs::TimeInput::T, 1.0, p64);
  EXPECT_TRUE(at::equal(d(x, 0.5).x0, f64.denoiser(x, 0.5).x0));
  std::filesystem::remove_all(dir);
}

TEST(Placement, ModelFileSamplesOnCuda) {
  if (!fs::cuda_available()) GTEST_SKIP() << "CUDA is not available in this build or on this machine";
  const std::string dir = scratch_dir("files", "cuda");
  const fs::MlpConfig c = small_mlp();
  const std::string path = dir + "/model.pt";
  fs::save_model_file(path, *fs::make_mlp(c, 4), teacher_info(c));
  const fs::ModelFile cpu = fs::load_model_file(path);
  const fs::ModelFile gpu = fs::load_model_file(path, {}, fs::parse_placement("cuda", "float32"));
  const at::Tensor x = at::randn({64, 3}, fs::testing::generator(5), at::kFloat);
  const auto grid = fs::timesteps(*cpu.schedule, 8, "logsnr");
  const at::Tensor a = fs::sample(cpu.denoiser, x, *fs::solver("dpmpp_2m"), grid).x;
  const at::Tensor b = fs::sample(gpu.denoiser, x.to(at::kCUDA), *fs::solver("dpmpp_2m"), grid).x;
  ASSERT_TRUE(b.is_cuda());
  const double tol = 8 * 256 * std::ldexp(1.0, -24) * a.abs().max().item<double>();
  EXPECT_LE((b.cpu() - a).abs().max().item<double>(), tol);
  std::filesystem::remove_all(dir);
}

#include "fewstep/micro/micro_sampler.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"
#include "fewstep/micro/micro_stepper.h"
#include "fewstep/micro/step_size.h"
#include "fewstep/sample/request.h"
#include "fewstep/core/atomic_file.h"
#include "fewstep/core/json_text.h"
#include "fewstep/core/sha256.h"
#include "fewstep/nets/network.h"

namespace fewstep {

namespace {

using json = nlohmann::json;
constexpr const char* kInfoFile = "fewstep_micro.json";
constexpr const char* kFormat = "fewstep.micro_sampler.v1";
constexpr const char* kChecksumField = "payload_sha256";
constexpr uint64_t kProbeSeed = 0x6d6963726f;  // "micro"
constexpr double kProbeTolerance = 1e-3;

json info_to_json(const MicroSamplerInfo& i) {
  return {{"format", kFormat},
          {"mode", to_string(i.mode)},
          {"heads",
           {{"sample_shape", i.heads.sample_shape},
            {"width", i.heads.width},
            {"blocks", i.heads.blocks},
            {"frequencies", i.heads.frequencies},
            {"embed", i.heads.embed},
            {"groups", i.heads.groups},
            {"step_features", i.heads.step_features},
            {"step_width", i.heads.step_width},
            {"history", i.heads.history},
            {"history_depth", i.heads.history_depth},
            {"residual_kind", i.heads.residual_kind}}},
          {"spread", i.spread},
          {"t_start", i.t_start},
          {"t_end", i.t_end},
          {"teacher", i.teacher},
          {"schedule", i.schedule},
          {"training", i.training}};
}

MicroSamplerInfo info_from_json(const json& j) {
  MicroSamplerInfo i;
  i.mode = parse_micro_mode(j.at("mode").get<std::string>());
  const json& h = j.at("heads");
  i.heads.sample_shape = h.at("sample_shape").get<std::vector<int64_t>>();
  i.heads.width = h.at("width").get<int64_t>();
  i.heads.blocks = h.at("blocks").get<int64_t>();
  i.heads.frequencies = h.at("frequencies").get<int64_t>();
  i.heads.embed = h.at("embed").get<int64_t>();
  i.heads.groups = h.at("groups").get<int64_t>();
  i.heads.step_features = h.at("step_features").get<int64_t>();
  i.heads.step_width = h.at("step_width").get<int64_t>();
  i.heads.history = h.value("history", false);
  i.heads.history_depth = h.value("history_depth", int64_t{1});
  i.heads.residual_kind = h.value("residual_kind", std::string("network"));
  i.spread = j.at("spread").get<double>();
  i.t_start = j.at("t_start").get<double>();
  i.t_end = j.at("t_end").get<double>();
  i.teacher = j.at("teacher").get<std::string>();
  i.schedule = j.at("schedule").get<std::string>();
  i.training = j.value("training", std::string());
  return i;
}

int64_t count(const ScriptNet& net) { return net ? parameter_count(*net) : 0; }

}  // namespace

std::string micro_sampler_info_json(const MicroSamplerInfo& info) { return info_to_json(info).dump(2); }

MicroMode parse_micro_mode(const std::string& name) {
  if (name == "residual") return MicroMode::Residual;
  if (name == "step_size") return MicroMode::StepSize;
  if (name == "joint") return MicroMode::Joint;
  FEWSTEP_CHECK_VALUE(false, "micro-distillation mode must be 'residual', 'step_size' or 'joint', got '", name, "'");
  throw;  // unreachable
}

std::string to_string(MicroMode mode) {
  switch (mode) {
    case MicroMode::Residual: return "residual";
    case MicroMode::StepSize: return "step_size";
    case MicroMode::Joint: return "joint";
  }
  return "?";
}

MicroSampler::MicroSampler(ScriptNet residual, ScriptNet step_size, MicroSamplerInfo info, at::Tensor teacher_probe)
    : residual_(std::move(residual)), step_size_(std::move(step_size)), info_(std::move(info)),
      probe_(std::move(teacher_probe)) {
  info_.heads.validate();
  const bool needs_residual = info_.mode != MicroMode::StepSize, needs_step = info_.mode != MicroMode::Residual;
  FEWSTEP_CHECK_VALUE(!needs_residual || residual_ != nullptr, "MicroSampler: mode '", to_string(info_.mode),
                      "' needs a residual head (g_psi)");
  FEWSTEP_CHECK_VALUE(!needs_step || step_size_ != nullptr, "MicroSampler: mode '", to_string(info_.mode),
                      "' needs a step-size head (h_phi)");
  FEWSTEP_CHECK_VALUE(info_.spread >= 0.0 && info_.spread < 1.0, "MicroSampler: spread must be in [0, 1), got ",
                      info_.spread);
  FEWSTEP_CHECK_VALUE(info_.t_start > info_.t_end, "MicroSampler: t_start (", info_.t_start, ") must exceed t_end (",
                      info_.t_end, ")");
  FEWSTEP_CHECK_VALUE(probe_.defined(), "MicroSampler: teacher_probe is required (MicroSampler::probe_teacher)");
  if (!needs_residual) residual_ = nullptr;
  if (!needs_step) step_size_ = nullptr;
}

at::Tensor MicroSampler::probe_teacher(const Denoiser& teacher, const MicroSamplerInfo& info) {
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), info.heads.sample_shape.begin(), info.heads.sample_shape.end());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(kProbeSeed);
  const at::Tensor x = at::randn(shape, gen, at::kFloat);
  c10::InferenceMode guard;
  std::vector<at::Tensor> out;
  for (double f : {0.3, 0.8}) {
    const double t = info.t_end + f * (info.t_start - info.t_end);
    out.push_back(teacher(x * teacher.schedule_ref().sigma(t), t).eps.to(at::kFloat).cpu());
  }
  return at::cat(out);
}

void MicroSampler::check_teacher(const Denoiser& teacher) const {
  at::Tensor now;
  try {
    now = probe_teacher(teacher, info_);
  } catch (const c10::Error& e) {
    FEWSTEP_CHECK_VALUE(false, "micro sampler ", source_.empty() ? "(in memory)" : "'" + source_ + "'",
                        " (distilled from teacher '", info_.teacher,
                        "'): the given model cannot be evaluated on samples of shape ",
                        c10::IntArrayRef(info_.heads.sample_shape), ": ", e.what_without_backtrace());
  }
  const double diff = (now - probe_).norm().item<double>() / std::max(probe_.norm().item<double>(), 1e-30);
  const std::string where = source_.empty() ? "(in memory)" : "'" + source_ + "'";
  FEWSTEP_CHECK_VALUE(diff <= kProbeTolerance, "micro sampler ", where, " was distilled from teacher '",
                      info_.teacher, "' (schedule ", info_.schedule,
                      "); the given model is a different teacher: its predictions on the identity probe differ by ",
                      diff, " (relative, tolerance ", kProbeTolerance,
                      "). A micro-distilled sampler only works with the teacher it was trained on.");
}

void MicroSampler::save(const std::string& path) const {
  torch::jit::Module bundle(c10::QualifiedName("__torch__.fewstep.MicroSampler"),
                            std::make_shared<torch::jit::CompilationUnit>(), /*shouldMangle=*/true);
  if (residual_) bundle.register_module("residual", *residual_);
  if (step_size_) bundle.register_module("step_size", *step_size_);
  bundle.register_buffer("teacher_probe", probe_);
  // The record carries the checksum of everything else in the archive (code, constants, weights)
  // and of itself without that field; the archive's other records do not depend on the record.
  json record = info_to_json(info_);
  const std::string draft = serialize_network(bundle, path, {{kInfoFile, record.dump(2)}});
  record[kChecksumField] = Sha256()
                               .field(archive_records_sha256(draft, path, {kInfoFile}))
                               .field(record.dump())
                               .hex_digest();
  save_network(bundle, path, {{kInfoFile, record.dump(2)}});
}

std::shared_ptr<const MicroSampler> MicroSampler::load(const std::string& path) {
  const std::string bytes = read_file(path, "MicroSampler.load: path");
  LoadedNetwork loaded = load_network_bytes(bytes, path, "MicroSampler.load", {kInfoFile}, /*require_forward=*/false);
  const std::string& text = loaded.extra_files[kInfoFile];
  FEWSTEP_CHECK_VALUE(!text.empty(), "MicroSampler.load: path '", path, "' has no '", kInfoFile,
                      "'; it is not a micro-distilled sampler (fewstep distill micro writes them)");
  MicroSamplerInfo info;
  try {
    check_json_depth(text, "MicroSampler.load: the record '" + std::string(kInfoFile) + "' of '" + path + "'");
    json j = json::parse(text);
    FEWSTEP_CHECK_VALUE(j.is_object() && j.value("format", std::string()) == kFormat, "format ",
                        j.is_object() && j.contains("format") ? j["format"].dump() : "none", " is not ", kFormat);
    if (j.contains(kChecksumField)) {  // files written before the checksum existed load unverified
      const std::string recorded = j[kChecksumField].is_string() ? j[kChecksumField].get<std::string>() : "";
      j.erase(kChecksumField);
      const std::string actual =
          Sha256().field(archive_records_sha256(bytes, path, {kInfoFile})).field(j.dump()).hex_digest();
      FEWSTEP_CHECK_VALUE(actual == recorded, "checksum mismatch: the archive's content hashes to ",
                          actual.substr(0, 16), "..., its record says ", recorded.substr(0, 16),
                          "... (the file is corrupted or was modified)");
    }
    info = info_from_json(j);
  } catch (const std::exception& e) {
    const auto* c10e = dynamic_cast<const c10::Error*>(&e);
    FEWSTEP_CHECK_VALUE(false, "MicroSampler.load: path '", path, "' has an invalid ", kInfoFile, ": ",
                        c10e ? c10e->what_without_backtrace() : e.what());
  }
  torch::jit::Module& bundle = *loaded.module;
  auto sub = [&](const char* name) -> ScriptNet {
    return bundle.hasattr(name) ? std::make_shared<torch::jit::Module>(bundle.attr(name).toModule()) : nullptr;
  };
  FEWSTEP_CHECK_VALUE(bundle.hasattr("teacher_probe") && bundle.attr("teacher_probe").isTensor(),
                      "MicroSampler.load: path '", path, "' has no teacher_probe buffer");
  auto sampler = std::make_shared<MicroSampler>(sub("residual"), sub("step_size"), info,
                                                bundle.attr("teacher_probe").toTensor());
  sampler->source_ = path;
  return sampler;
}

std::shared_ptr<const Stepper> MicroSampler::stepper() const {
  // A copy that owns its heads: the stepper may outlive this object.
  return std::make_shared<MicroStepper>(std::make_shared<MicroSampler>(*this));
}

std::shared_ptr<const StepController> MicroSampler::controller(int64_t nfe) const {
  if (!step_size_) return nullptr;
  return std::make_shared<LearnedStepController>(step_size_, nfe, info_.spread);
}

StepPlan MicroSampler::plan(const NoiseSchedule& schedule, int64_t nfe, Spacing spacing, std::optional<double> t_start,
                            std::optional<double> t_end) const {
  FEWSTEP_CHECK_VALUE(nfe >= 1, "micro sampler: nfe (teacher evaluations) must be >= 1, got ", nfe);
  StepPlan plan;
  plan.stepper = stepper();
  plan.t_start = t_start.value_or(info_.t_start);
  plan.t_end = t_end.value_or(info_.t_end);
  plan.controller = controller(nfe);
  if (plan.controller) {
    FEWSTEP_CHECK_VALUE(spacing == Spacing::LogSNR, "micro sampler ", source_.empty() ? "(in memory)" : "'" + source_ + "'",
                        " places its steps with its step-size head; spacing '", to_string(spacing),
                        "' applies to fixed grids only");
  } else {
    plan.grid = timesteps(schedule, nfe, spacing, plan.t_start, plan.t_end);
  }
  return plan;
}

Solution MicroSampler::sample(const Denoiser& teacher, const at::Tensor& x_T, int64_t nfe,
                              const SampleOptions& options) const {
  FEWSTEP_CHECK_VALUE(nfe >= 1, "MicroSampler.sample: nfe (teacher evaluations) must be >= 1, got ", nfe);
  SampleRequest request;
  request.model = borrowed(teacher);
  request.x_T = x_T;
  request.stepper = stepper();
  request.steps = nfe;
  request.options = options;
  return fewstep::sample(request);
}

int64_t MicroSampler::residual_parameters() const { return count(residual_); }
int64_t MicroSampler::step_size_parameters() const { return count(step_size_); }

}  // namespace fewstep

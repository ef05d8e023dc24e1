#include "fewstep/models/model_file.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <set>
#include <stdexcept>

#include <torch/script.h>

#include "fewstep/core/atomic_file.h"
#include "fewstep/core/check.h"
#include "fewstep/core/json_text.h"
#include "fewstep/core/sha256.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/models/consistency_function.h"
#include "fewstep/models/guidance.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule_spec.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/version.h"

namespace fewstep {

namespace {

using json = nlohmann::json;
namespace fsys = std::filesystem;

constexpr const char* kLegacyFormat = "fewstep.model.v1";

// Fields the library writes and interprets; everything else is the writer's metadata.
const std::set<std::string>& reserved_keys() {
  static const std::set<std::string> keys = {
      "format",  "schema",   "model_sha256",     "sidecar_sha256", "model", "name", "schedule",
      "prediction", "time_input", "time_scale",  "sample_shape", "network",  "sampler",
      "default_guidance", "consistency", "parameters", "fewstep_version", "torch_version", "tuned_grids"};
  return keys;
}

bool is_hex_digest(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

bool is_solver_name(const std::string& s) {
  return !s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
}

// The sidecar's own checksum: SHA-256 of its canonical JSON (compact, keys sorted) without the field.
std::string seal_of(json meta) {
  meta.erase("sidecar_sha256");
  return sha256_hex(meta.dump());
}

// The optional "tuned_grids" list: optimised time grids keyed by solver, options and NFE (each grid
// inside the schedule's range, at most one entry per key).
std::vector<ModelTunedGrid> tuned_grids_from_json(const json& list, const NoiseSchedule& schedule,
                                                  const std::string& where) {
  FEWSTEP_CHECK_VALUE(list.is_array(), where, ": tuned_grids must be a list, got ", list.dump());
  std::vector<ModelTunedGrid> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& e = list[i];
    const std::string at = where + ": tuned_grids[" + std::to_string(i) + "]";
    FEWSTEP_CHECK_VALUE(e.is_object() && e.contains("solver") && e.contains("nfe") && e.contains("timesteps"), at,
                        " must be an object with \"solver\", \"nfe\" and \"timesteps\", got ", e.dump());
    ModelTunedGrid g;
    g.solver = e["solver"].get<std::string>();
    FEWSTEP_CHECK_VALUE(is_solver_name(g.solver), at, ": solver must be a solver name, got '", g.solver, "'");
    g.nfe = e["nfe"].get<int64_t>();
    FEWSTEP_CHECK_VALUE(g.nfe >= 1, at, ": nfe must be >= 1, got ", g.nfe);
    if (e.contains("options")) g.options = e["options"].get<std::map<std::string, std::string>>();
    g.timesteps = e["timesteps"].get<std::vector<double>>();
    try {
      validate_grid(schedule, g.timesteps);
    } catch (const c10::ValueError& err) {
      FEWSTEP_CHECK_VALUE(false, at, ": timesteps ", e["timesteps"].dump(), " is not a grid of ", schedule.repr(),
                          ": ", err.what_without_backtrace());
    }
    g.fit = e.value("fit", json::object()).dump();
    for (const ModelTunedGrid& other : out)
      FEWSTEP_CHECK_VALUE(!other.same_key(g), at, ": a second grid for solver '", g.solver, "' at nfe ", g.nfe,
                          " with the same options");
    out.push_back(std::move(g));
  }
  return out;
}

json tuned_grid_to_json(const ModelTunedGrid& g, const std::string& who) {
  for (size_t i = 0; i < g.timesteps.size(); ++i)
    FEWSTEP_CHECK_VALUE(std::isfinite(g.timesteps[i]), who, ": tuned grid timesteps[", i, "] must be finite, got ",
                        g.timesteps[i]);
  json fit;
  try {
    fit = json::parse(g.fit.empty() ? std::string("{}") : g.fit);
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, who, ": tuned grid fit is not JSON: ", e.what());
  }
  FEWSTEP_CHECK_VALUE(fit.is_object(), who, ": tuned grid fit must be a JSON object, got ", fit.dump());
  return {{"solver", g.solver}, {"options", g.options}, {"nfe", g.nfe}, {"timesteps", g.timesteps}, {"fit", fit}};
}

// A sidecar as ModelFileInfo; every check of a field lives here (load and save both use it).
// `where` names the sidecar in messages ("sidecar 'x.json'"), `stem` is the default name;
// `check_seal`: verify the sidecar's own checksum (schema 2; off while a writer builds one).
ModelFileInfo info_from_json(const json& meta, const std::string& where, const std::string& stem,
                             bool check_seal = true) {
  FEWSTEP_CHECK_VALUE(meta.is_object(), where, " is not a fewstep model sidecar (expected a JSON object with \"format\": \"",
                      kModelFileFormat, "\")");
  ModelFileInfo info;
  const std::string format = meta.contains("format") && meta["format"].is_string() ? meta["format"].get<std::string>() : "";
  if (format == kLegacyFormat) {
    info.schema = 1;
  } else {
    FEWSTEP_CHECK_VALUE(format == kModelFileFormat, where, " is not a fewstep model sidecar (expected \"format\": \"",
                        kModelFileFormat, "\", got ", meta.contains("format") ? meta["format"].dump() : "none", ")");
    FEWSTEP_CHECK_VALUE(meta.contains("schema") && meta["schema"].is_number_integer(), where,
                        " has no integer \"schema\"");
    info.schema = meta["schema"].get<int>();
    FEWSTEP_CHECK_VALUE(info.schema >= 2 && info.schema <= kModelFileSchema, where, " has schema ", info.schema,
                        "; this fewstep reads schemas 1 to ", kModelFileSchema,
                        (info.schema > kModelFileSchema ? " (the file was written by a newer fewstep)" : ""));
    FEWSTEP_CHECK_VALUE(meta.contains("model_sha256") && meta["model_sha256"].is_string() &&
                            is_hex_digest(meta["model_sha256"].get<std::string>()),
                        where, " has no valid \"model_sha256\" (64 lowercase hex digits)");
    info.model_sha256 = meta["model_sha256"].get<std::string>();
    if (check_seal) {
      FEWSTEP_CHECK_VALUE(meta.contains("sidecar_sha256") && meta["sidecar_sha256"].is_string() &&
                              is_hex_digest(meta["sidecar_sha256"].get<std::string>()),
                          where, " has no valid \"sidecar_sha256\" (64 lowercase hex digits)");
      FEWSTEP_CHECK_VALUE(meta["sidecar_sha256"].get<std::string>() == seal_of(meta), where,
                          " does not match its own checksum (\"sidecar_sha256\"): it changed after it was written. "
                          "If it is corrupted, restore it; if it was edited on purpose, re-seal it with "
                          "fs.upgrade_model_file(model_path)");
    }
  }
  for (const char* key : {"schedule", "prediction", "sample_shape"})
    FEWSTEP_CHECK_VALUE(meta.contains(key), where, " has no \"", key, "\"");
  try {
    info.schedule = schedule_from_spec(meta["schedule"].dump(), where);
    info.prediction = parse_prediction(meta["prediction"].get<std::string>());
    info.time_input = parse_time_input(meta.value("time_input", std::string("t")));
    info.time_scale = meta.value("time_scale", 1.0);
    FEWSTEP_CHECK_VALUE(std::isfinite(info.time_scale) && info.time_scale != 0.0, where,
                        ": time_scale must be finite and non-zero, got ", info.time_scale);
    network_time(*info.schedule, info.schedule->t_max(), info.time_input, info.time_scale);  // "index" needs a discrete schedule
    const json& shape = meta["sample_shape"];
    FEWSTEP_CHECK_VALUE(shape.is_array() && !shape.empty(), where, ": sample_shape must be a non-empty list, got ",
                        shape.dump());
    for (const json& d : shape) {
      FEWSTEP_CHECK_VALUE(d.is_number_integer() && d.get<int64_t>() > 0, where,
                          ": sample_shape entries must be positive integers, got ", shape.dump());
      info.sample_shape.push_back(d.get<int64_t>());
    }
    info.name = meta.value("name", stem);
    FEWSTEP_CHECK_VALUE(!info.name.empty() && info.name.find('/') == std::string::npos, where,
                        ": name must be a non-empty file stem, got '", info.name, "'");
    info.parameters = meta.value("parameters", int64_t{0});
    if (meta.contains("network")) {
      const json& net = meta["network"];
      FEWSTEP_CHECK_VALUE(net.is_object(), where, ": network must be an object {\"kind\", \"config\"}, got ", net.dump());
      const json config = net.value("config", json::object());
      FEWSTEP_CHECK_VALUE(config.is_object(), where, ": network.config must be an object, got ", config.dump());
      info.num_classes = config.value("num_classes", int64_t{0});
      FEWSTEP_CHECK_VALUE(info.num_classes >= 0, where, ": network.config.num_classes must be >= 0, got ",
                          info.num_classes);
      info.guidance_input = config.value("guidance_input", false);
      info.network = net.dump();
    }
    if (meta.contains("sampler")) {
      const json& sm = meta["sampler"];
      FEWSTEP_CHECK_VALUE(sm.is_object() && sm.contains("timesteps"), where,
                          ": sampler must be an object with \"timesteps\", got ", sm.dump());
      info.solver = sm.value("solver", std::string("ddim"));
      FEWSTEP_CHECK_VALUE(is_solver_name(info.solver), where, ": sampler.solver must be a solver name, got '",
                          info.solver, "'");
      info.timesteps = sm["timesteps"].get<std::vector<double>>();
      try {
        validate_grid(*info.schedule, info.timesteps);
      } catch (const c10::ValueError& e) {
        FEWSTEP_CHECK_VALUE(false, where, ": sampler.timesteps ", sm["timesteps"].dump(), " is not a grid of ",
                            info.schedule->repr(), ": ", e.what_without_backtrace());
      }
    }
    if (meta.contains("tuned_grids")) info.tuned_grids = tuned_grids_from_json(meta["tuned_grids"], *info.schedule, where);
    if (meta.contains("default_guidance")) {
      FEWSTEP_CHECK_VALUE(meta["default_guidance"].is_number(), where, ": default_guidance must be a number, got ",
                          meta["default_guidance"].dump());
      info.default_guidance = meta["default_guidance"].get<double>();
      FEWSTEP_CHECK_VALUE(std::isfinite(*info.default_guidance), where, ": default_guidance must be finite");
    }
    if (meta.contains("consistency")) {
      const json& cm = meta["consistency"];
      FEWSTEP_CHECK_VALUE(cm.is_object(), where, ": consistency must be an object {\"sigma_data\", \"t_min\"}");
      ModelConsistency c;
      c.sigma_data = cm.value("sigma_data", 0.5);
      c.t_min = cm.value("t_min", 0.0);
      FEWSTEP_CHECK_VALUE(std::isfinite(c.sigma_data) && c.sigma_data > 0.0, where,
                          ": consistency.sigma_data must be finite and > 0, got ", c.sigma_data);
      FEWSTEP_CHECK_VALUE(std::isfinite(c.t_min) && c.t_min >= 0.0, where,
                          ": consistency.t_min must be finite and >= 0, got ", c.t_min);
      FEWSTEP_CHECK_VALUE(info.num_classes == 0, where, ": class-conditional consistency models are not supported");
      info.consistency = c;
    }
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, where, ": ", e.what());
  }
  json metadata = json::object();
  for (const auto& [key, value] : meta.items())
    if (reserved_keys().count(key) == 0) metadata[key] = value;
  info.metadata = metadata.dump();
  info.sidecar_json = meta.dump();
  return info;
}

// The sidecar of `info` (without the checksum and parameter count, which come from the bytes).
json info_to_json(const ModelFileInfo& info, const std::string& model_path) {
  const std::string who = "save_model_file('" + model_path + "')";
  FEWSTEP_CHECK_VALUE(info.schedule != nullptr, who, ": schedule must be set");
  json meta;
  check_json_depth(info.metadata, who + ": metadata");
  try {
    meta = json::parse(info.metadata);
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, who, ": metadata is not JSON: ", e.what());
  }
  FEWSTEP_CHECK_VALUE(meta.is_object(), who, ": metadata must be a JSON object, got ", meta.dump());
  for (const auto& [key, value] : meta.items())
    FEWSTEP_CHECK_VALUE(reserved_keys().count(key) == 0, who, ": metadata must not set \"", key,
                        "\" (the library writes it from the other fields)");
  json schedule = json::parse(schedule_spec(*info.schedule));
  schedule["repr"] = info.schedule->repr();
  meta["format"] = kModelFileFormat;
  meta["schema"] = kModelFileSchema;
  meta["model"] = fsys::path(model_path).filename().string();
  meta["name"] = info.name.empty() ? fsys::path(model_path).stem().string() : info.name;
  meta["schedule"] = schedule;
  meta["prediction"] = to_string(info.prediction);
  meta["time_input"] = to_string(info.time_input);
  FEWSTEP_CHECK_VALUE(std::isfinite(info.time_scale), who, ": time_scale must be finite, got ", info.time_scale);
  meta["time_scale"] = info.time_scale;
  meta["sample_shape"] = info.sample_shape;
  if (!info.network.empty()) {
    check_json_depth(info.network, who + ": network");
    try {
      meta["network"] = json::parse(info.network);
    } catch (const json::exception& e) {
      FEWSTEP_CHECK_VALUE(false, who, ": network is not JSON: ", e.what());
    }
  }
  if (!info.timesteps.empty()) {
    for (size_t i = 0; i < info.timesteps.size(); ++i)  // JSON has no NaN/Inf: name them here
      FEWSTEP_CHECK_VALUE(std::isfinite(info.timesteps[i]), who, ": timesteps[", i, "] must be finite, got ",
                          info.timesteps[i]);
    meta["sampler"] = {{"solver", info.solver.empty() ? std::string("ddim") : info.solver},
                       {"timesteps", info.timesteps}};
  } else {
    FEWSTEP_CHECK_VALUE(info.solver.empty(), who, ": solver '", info.solver,
                        "' needs timesteps (the grid it samples on)");
  }
  if (!info.tuned_grids.empty()) {
    json list = json::array();
    for (const ModelTunedGrid& g : info.tuned_grids) list.push_back(tuned_grid_to_json(g, who));
    meta["tuned_grids"] = list;
  }
  if (info.default_guidance) {
    FEWSTEP_CHECK_VALUE(std::isfinite(*info.default_guidance), who, ": default_guidance must be finite, got ",
                        *info.default_guidance);
    meta["default_guidance"] = *info.default_guidance;
  }
  if (info.consistency) {
    FEWSTEP_CHECK_VALUE(std::isfinite(info.consistency->sigma_data) && std::isfinite(info.consistency->t_min), who,
                        ": consistency must be finite");
    FEWSTEP_CHECK_VALUE(info.prediction == Prediction::X0, who,
                        ": a consistency model predicts x0; prediction is ", to_string(info.prediction));
    meta["consistency"] = {{"sigma_data", info.consistency->sigma_data}, {"t_min", info.consistency->t_min}};
  }
  meta["fewstep_version"] = fewstep::version();
  meta["torch_version"] = fewstep::torch_version();
  return meta;
}

// One forward pass on a zero sample of the declared shape: the network must take the declared
// inputs and return a tensor of that shape. Runs without autograd and leaves the global RNG (which
// dropout in a training-mode module draws from) as it was.
void probe_network(const torch::jit::Module& net, const ModelFileInfo& info, const std::string& who) {
  FEWSTEP_CHECK_VALUE(net.find_method("forward").has_value(), who, ": the network has no forward method");
  at::TensorOptions options = at::TensorOptions().dtype(at::kFloat);
  for (const at::Tensor& p : net.parameters(/*recurse=*/true)) {
    if (p.is_floating_point()) options = p.options().requires_grad(false);
    break;
  }
  std::vector<int64_t> shape = {1};
  shape.insert(shape.end(), info.sample_shape.begin(), info.sample_shape.end());
  std::string error;
  at::Tensor out;
  try {
    with_dropout_seed(0, [&] {
      at::NoGradGuard no_grad;
      const at::Tensor x = at::zeros(shape, options);
      const at::Tensor t = at::full({1}, network_time(*info.schedule, info.schedule->t_max(), info.time_input,
                                                      info.time_scale), options);
      at::Tensor y, w;
      if (info.num_classes > 0 || info.guidance_input)
        y = at::full({1}, info.num_classes, options.dtype(at::kLong));
      if (info.guidance_input) w = at::full({1}, info.default_guidance.value_or(1.0), options);
      out = forward_network(net, x, t, y, w, who.c_str());
      return out;
    });
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK_VALUE(error.empty(), who, ": the network cannot run on one sample of sample_shape ",
                      c10::IntArrayRef(info.sample_shape),
                      (info.num_classes > 0 ? " with a class label y" : ""), (info.guidance_input ? " and w" : ""),
                      ": ", error);
  FEWSTEP_CHECK_VALUE(out.sizes() == c10::IntArrayRef(shape), who, ": the network maps a sample of shape ",
                      c10::IntArrayRef(shape), " to shape ", out.sizes(), "; it must return its input's shape");
}

// The device and floating dtype of a loaded network (its first floating parameter or buffer; CPU and
// float32 without one): conditioning tensors are put there once, so that no evaluation copies them
// from the host (a synchronous copy on a GPU, docs/gpu.md).
at::TensorOptions network_options(const torch::jit::Module& net) {
  for (const at::Tensor& p : net.parameters(/*recurse=*/true))
    if (p.is_floating_point()) return at::TensorOptions().device(p.device()).dtype(p.scalar_type());
  for (const at::Tensor& b : net.buffers(/*recurse=*/true))
    if (b.is_floating_point()) return at::TensorOptions().device(b.device()).dtype(b.scalar_type());
  return at::TensorOptions().dtype(at::kFloat);
}

// Builds the Denoiser of a loaded network for `c` (see ModelConditioning).
Denoiser conditioned_denoiser(const ModelFile& f, const ModelConditioning& c) {
  const std::string& path = f.path;
  const ModelFileInfo& info = f.info;
  const auto module = f.network;
  const SchedulePtr& schedule = info.schedule;
  FEWSTEP_CHECK_VALUE(info.num_classes > 0 || (!c.labels.defined() && !c.guidance), "model '", path,
                      "' is not class-conditional; conditioning.labels and conditioning.guidance must be unset");
  // The fingerprint: the file pair, then what the conditioning adds.
  Sha256 h;
  h.field("fewstep.model_file.conditioned").field(f.file_fingerprint());
  at::Tensor labels = c.labels;
  if (labels.defined()) {
    FEWSTEP_CHECK_VALUE(labels.dim() == 1 && labels.numel() >= 1, "conditioning.labels must be a 1-D tensor, got shape ",
                        labels.sizes());
    labels = labels.to(at::kLong);
    const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    FEWSTEP_CHECK_VALUE(lo >= 0 && hi < info.num_classes, "conditioning.labels must lie in [0, ", info.num_classes,
                        ") for model '", path, "', got range [", lo, ", ", hi, "]");
    h.field("labels");
    sha256_update(h, labels);
  }
  const at::TensorOptions net_options = network_options(*module);
  const at::Device device = net_options.device();
  if (labels.defined()) labels = labels.to(device);
  const at::Tensor null_label = at::full({1}, info.num_classes, at::TensorOptions().dtype(at::kLong).device(device));
  const auto finish = [&h](const Denoiser& d, double guidance) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", guidance);
    const std::string fingerprint = h.field("guidance").field(text).hex_digest();
    return d.with_fingerprint([fingerprint] { return fingerprint; });
  };
  if (info.consistency) {
    ConsistencyParameterization p;
    p.sigma_data = info.consistency->sigma_data;
    p.t_min = info.consistency->t_min;
    p.time_input = info.time_input;
    p.time_scale = info.time_scale;
    return finish(consistency_denoiser(module, schedule, p), 1.0);
  }
  if (info.num_classes == 0) {
    Denoiser::Network fn = [module, path](const at::Tensor& x, const at::Tensor& t) {
      return forward_network(*module, x, t, {}, {}, path.c_str());
    };
    return finish(Denoiser(std::move(fn), schedule, info.prediction, info.time_input, info.time_scale), 1.0);
  }
  if (info.guidance_input) {
    const std::optional<double> s = c.guidance ? c.guidance : info.default_guidance;
    FEWSTEP_CHECK_VALUE(s.has_value(), "model '", path, "' takes a guidance weight as input; pass conditioning.guidance");
    FEWSTEP_CHECK_VALUE(std::isfinite(*s), "conditioning.guidance must be finite, got ", *s);
    const at::Tensor y = labels.defined() ? labels : null_label;
    const at::Tensor w = at::full({1}, *s, net_options);
    Denoiser::Network fn = [module, y, w, path](const at::Tensor& x, const at::Tensor& t) {
      return forward_network(*module, x, t, y.to(x.device()), w.to(x.device(), x.scalar_type()), path.c_str());
    };
    return finish(Denoiser(std::move(fn), schedule, info.prediction, info.time_input, info.time_scale), *s);
  }
  const double s = c.guidance.value_or(1.0);
  FEWSTEP_CHECK_VALUE(std::isfinite(s), "conditioning.guidance must be finite, got ", s);
  if (s != 1.0) {
    FEWSTEP_CHECK_VALUE(labels.defined(), "conditioning.guidance = ", s, " needs conditioning.labels (guidance "
                        "pushes samples towards a class)");
    ConditionalNetwork net = [module, path](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      return forward_network(*module, x, t, y, {}, path.c_str());
    };
    return finish(classifier_free_guidance(std::move(net), schedule, info.prediction, labels, null_label, s,
                                           info.time_input,
                                           info.time_scale),
                  s);
  }
  const at::Tensor y = labels.defined() ? labels : null_label;
  Denoiser::Network fn = [module, y, path](const at::Tensor& x, const at::Tensor& t) {
    return forward_network(*module, x, t, y.to(x.device()), {}, path.c_str());
  };
  return finish(Denoiser(std::move(fn), schedule, info.prediction, info.time_input, info.time_scale), 1.0);
}

void write_sidecar(const std::string& side, const json& meta) {
  const std::string text = meta.dump(2) + "\n";
  atomic_write_bytes(side, text.data(), text.size());
}

}  // namespace

std::string model_sidecar_path(const std::string& model_path) {
  return fsys::path(model_path).replace_extension(".json").string();
}

namespace {

ModelFileInfo parse_sidecar_text(const std::string& text, const std::string& where, const std::string& stem,
                                 bool check_seal) {
  check_json_depth(text, where);
  json meta;
  try {
    meta = json::parse(text);
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, where, " is not valid JSON: ", e.what());
  }
  return info_from_json(meta, where, stem, check_seal);
}

}  // namespace

ModelFileInfo read_model_file_info(const std::string& model_path) {
  const std::string side = model_sidecar_path(model_path);
  std::error_code ec;
  FEWSTEP_CHECK_VALUE(fsys::exists(side, ec), "model '", model_path, "' has no sidecar '", side,
                      "' (written by `fewstep train` beside the model; it names the schedule and prediction)");
  return parse_sidecar_text(read_file(side, "sidecar"), "sidecar '" + side + "'",
                            fsys::path(model_path).stem().string(), true);
}

ModelFileInfo parse_model_sidecar(const std::string& json_text, const std::string& where) {
  return parse_sidecar_text(json_text, where, "model", false);
}

std::string save_model_file(const std::string& model_path, const torch::jit::Module& network,
                            const ModelFileInfo& info) {
  const std::string who = "save_model_file('" + model_path + "')";
  FEWSTEP_CHECK_VALUE(!model_path.empty() && fsys::path(model_path).has_filename(), "save_model_file: model_path ",
                      "must name a file, got '", model_path, "'");
  const std::string side = model_sidecar_path(model_path);
  FEWSTEP_CHECK_VALUE(side != model_path, "save_model_file: model_path '", model_path,
                      "' would be its own sidecar; use the .pt extension");
  const fsys::path dir = fsys::absolute(model_path).parent_path();
  std::error_code ec;
  FEWSTEP_CHECK_VALUE(fsys::is_directory(dir, ec), "save_model_file: model_path '", model_path, "': directory '",
                      dir.string(), "' does not exist");
  FEWSTEP_CHECK_VALUE(!fsys::is_directory(model_path, ec), "save_model_file: model_path '", model_path,
                      "' is a directory");

  // 1. Everything is validated before a byte is written: the sidecar goes through the reader's checks.
  json meta = info_to_json(info, model_path);
  meta["model_sha256"] = std::string(64, '0');  // placeholder of the right form for the check
  const ModelFileInfo checked = info_from_json(meta, who, fsys::path(model_path).stem().string(), false);
  probe_network(network, checked, who);

  // 2. The bytes, made in memory; then the .pt, then the sidecar that vouches for it.
  const std::string bytes = serialize_network(network, model_path);
  meta["model_sha256"] = sha256_hex(bytes);
  meta["parameters"] = parameter_count(network);
  meta["sidecar_sha256"] = seal_of(meta);
  atomic_write_bytes(model_path, bytes.data(), bytes.size());
  write_sidecar(side, meta);
  return meta.dump(2) + "\n";
}

ModelFile load_model_file(const std::string& model_path, const ModelConditioning& conditioning,
                          const Placement& placement) {
  std::error_code ec;
  FEWSTEP_CHECK_VALUE(fsys::is_regular_file(model_path, ec), "model_path '", model_path, "' is not a file");
  ModelFileInfo info = read_model_file_info(model_path);
  LoadedNetwork loaded = load_network_checked(model_path, "load_model_file", info.model_sha256,
                                              "its sidecar '" + model_sidecar_path(model_path) + "'", {}, true,
                                              placement);
  // A placeholder until the network is wrapped (the wrapping needs the finished record).
  Denoiser placeholder = Denoiser::direct([](const at::Tensor& x, double) { return DenoiserOutput{x, x}; },
                                          info.schedule, "unbuilt");
  ModelFile file{std::move(placeholder), info.schedule, info.prediction, info.sample_shape, info.name, model_path,
                 info.sidecar_json, info.num_classes, info.guidance_input, info.solver, info.timesteps, info,
                 loaded.sha256, loaded.module};
  file.denoiser = conditioned_denoiser(file, conditioning);
  return file;
}

Denoiser ModelFile::conditioned(const ModelConditioning& conditioning) const {
  return conditioned_denoiser(*this, conditioning);
}

std::string ModelFile::file_fingerprint() const {
  // The sidecar without what cannot change the network's outputs: its tuned grids (written by
  // save_tuned_grid after the fact, so caches of the model's solves survive them) and the seal over them.
  json side = json::parse(info.sidecar_json);
  side.erase("tuned_grids");
  side.erase("sidecar_sha256");
  return Sha256().field("fewstep.model_file").field(sha256).field(sha256_hex(side.dump())).hex_digest();
}

std::string upgrade_model_file(const std::string& model_path) {
  std::error_code ec;
  FEWSTEP_CHECK_VALUE(fsys::is_regular_file(model_path, ec), "model_path '", model_path, "' is not a file");
  const std::string side = model_sidecar_path(model_path);
  FEWSTEP_CHECK_VALUE(fsys::exists(side, ec), "model '", model_path, "' has no sidecar '", side, "'");
  const std::string where = "sidecar '" + side + "'";
  const std::string text = read_file(side, "sidecar");
  check_json_depth(text, where);
  json previous;
  try {
    previous = json::parse(text);
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, where, " is not valid JSON: ", e.what());
  }
  // Every field is checked as on load, except the sidecar's own checksum: re-sealing an edited
  // sidecar is what this is for.
  const ModelFileInfo old = info_from_json(previous, where, fsys::path(model_path).stem().string(), false);
  const std::string bytes = read_file(model_path, "upgrade_model_file: model_path");
  // A schema-2 sidecar already vouches for its .pt: refuse to bless a file that no longer matches.
  FEWSTEP_CHECK_VALUE(old.model_sha256.empty() || old.model_sha256 == sha256_hex(bytes), "upgrade_model_file: '",
                      model_path, "' does not match the SHA-256 its sidecar records; it is corrupted or was replaced");
  json meta = info_to_json(old, model_path);
  meta["model_sha256"] = sha256_hex(bytes);
  meta["parameters"] = old.parameters;
  // Keep what the writer recorded about its versions.
  for (const char* key : {"fewstep_version", "torch_version", "model"})
    if (previous.contains(key)) meta[key] = previous[key];
  meta["sidecar_sha256"] = seal_of(meta);
  info_from_json(meta, "upgrade_model_file('" + model_path + "')", fsys::path(model_path).stem().string());
  write_sidecar(side, meta);
  return meta.dump(2) + "\n";
}

std::string ModelTunedGrid::options_text() const {
  std::string text;
  for (const auto& [key, value] : options) text += (text.empty() ? "" : ",") + key + "=" + value;
  return text;
}

bool ModelTunedGrid::same_key(const ModelTunedGrid& other) const {
  return solver == other.solver && nfe == other.nfe && options == other.options;
}

std::map<std::string, std::string> tuned_grid_options(const Options& options) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : options.values()) out[key] = to_string(value);
  return out;
}

namespace {

// Re-seals the sidecar of `model_path` after `edit` changes its fields; the .pt is not rewritten
// and must match its recorded SHA-256. Every field is checked as on load before the file is
// replaced (atomically).
std::string reseal_sidecar(const std::string& model_path, const std::string& who,
                           const std::function<void(ModelFileInfo&)>& edit) {
  // The file as load reads it: sidecar sealed, .pt matching its recorded SHA-256.
  const ModelFileInfo old = read_model_file_info(model_path);
  const std::string bytes = read_file(model_path, who + ": model_path");
  FEWSTEP_CHECK_VALUE(old.model_sha256.empty() || old.model_sha256 == sha256_hex(bytes), who, ": '", model_path,
                      "' does not match the SHA-256 its sidecar records; it is corrupted or was replaced");
  ModelFileInfo info = old;
  edit(info);
  const json previous = json::parse(old.sidecar_json);
  json meta = info_to_json(info, model_path);
  meta["model_sha256"] = sha256_hex(bytes);
  meta["parameters"] = old.parameters;
  for (const char* key : {"fewstep_version", "torch_version", "model"})
    if (previous.contains(key)) meta[key] = previous[key];
  meta["sidecar_sha256"] = seal_of(meta);
  info_from_json(meta, who + "('" + model_path + "')", fsys::path(model_path).stem().string());
  write_sidecar(model_sidecar_path(model_path), meta);
  return meta.dump(2) + "\n";
}

}  // namespace

std::string save_tuned_grid(const std::string& model_path, const ModelTunedGrid& grid) {
  return reseal_sidecar(model_path, "save_tuned_grid", [&](ModelFileInfo& info) {
    bool replaced = false;
    for (ModelTunedGrid& g : info.tuned_grids)
      if (g.same_key(grid)) {
        g = grid;
        replaced = true;
      }
    if (!replaced) info.tuned_grids.push_back(grid);
  });
}

std::string student_metadata(const std::string& teacher_metadata, const std::string& distillation) {
  const auto object = [](const std::string& text, const char* name) {
    json value = json::parse(text, nullptr, false);
    FEWSTEP_CHECK_VALUE(value.is_object(), "student_metadata: ", name, " must be a JSON object, got '", text, "'");
    return value;
  };
  json metadata = object(teacher_metadata, "teacher_metadata");
  for (const char* own : {"training", "evaluation"}) metadata.erase(own);
  metadata["distillation"] = object(distillation, "distillation");
  return metadata.dump();
}

std::string save_model_sampler(const std::string& model_path, const std::string& solver) {
  return reseal_sidecar(model_path, "save_model_sampler", [&](ModelFileInfo& info) {
    FEWSTEP_CHECK_VALUE(!info.timesteps.empty(), "save_model_sampler: '", model_path,
                        "' has no grid of its own (sidecar \"sampler\") for solver '", solver, "' to sample on");
    info.solver = solver;
  });
}

}  // namespace fewstep

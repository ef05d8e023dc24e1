// Trainer options as flat JSON objects (train/trainer.h's options_json and each trainer's
// options_to_json / options_from_json). Each trainer lists its options once, in a `fields(v, options)`
// function that calls v(key, field) for every option; a Writer turns that list into a JSON object and a
// Reader fills the struct from one (Python keyword arguments, checkpoints) with type checks and a
// ValueError naming any key it does not know. Private to src/train/.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/train/conditioning.h"
#include "fewstep/train/optimizer.h"

namespace fewstep::json_options {

using json = nlohmann::json;

inline std::string to_string(LrDecay decay) { return decay == LrDecay::Linear ? "linear" : "cosine"; }

}  // namespace fewstep::json_options

namespace fewstep {

// Enumerations by name, for the Reader (each trainer adds its own beside its fields()).
inline void parse_enum(const std::string& name, LrDecay& out) {
  FEWSTEP_CHECK_VALUE(name == "cosine" || name == "linear", "decay should be 'cosine' or 'linear', got '", name, "'");
  out = name == "linear" ? LrDecay::Linear : LrDecay::Cosine;
}
inline void parse_enum(const std::string& name, Prediction& out) { out = parse_prediction(name); }
inline void parse_enum(const std::string& name, TimeInput& out) { out = parse_time_input(name); }

}  // namespace fewstep

namespace fewstep::json_options {

/// The optimiser's keys, shared by every trainer: lr, warmup, total_steps, min_lr, decay, beta1, beta2,
/// eps, weight_decay, grad_clip.
template <class V, class O>
void optimizer_fields(V& v, O& o) {
  v("lr", o.schedule.lr);
  v("warmup", o.schedule.warmup_steps);
  v("total_steps", o.schedule.total_steps);
  v("min_lr", o.schedule.min_lr);
  v("decay", o.schedule.decay);
  v("beta1", o.beta1);
  v("beta2", o.beta2);
  v("eps", o.eps);
  v("weight_decay", o.weight_decay);
  v("grad_clip", o.grad_clip);
}

/// num_classes, label_dropout.
template <class V, class O>
void conditioning_fields(V& v, O& c) {
  v("num_classes", c.num_classes);
  v("label_dropout", c.label_dropout);
}

/// Writes every field into a JSON object.
class Writer {
 public:
  template <class T>
  void operator()(const char* key, const T& value) {
    if constexpr (std::is_enum_v<T>) {
      using json_options::to_string;
      j[key] = to_string(value);
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      j[key] = value ? json(*value) : json();
    } else if constexpr (std::is_same_v<T, std::optional<std::pair<double, double>>>) {
      j[key] = value ? json{value->first, value->second} : json();
    } else {
      j[key] = value;
    }
  }
  std::string dump() const { return j.dump(); }
  json j = json::object();
};

/// Sets the fields whose keys are present, checking types; finish() refuses unknown keys.
class Reader {
 public:
  /// `who` names the options in messages ("DenoiserTrainerOptions").
  Reader(const std::string& text, std::string who) : who_(std::move(who)) {
    try {
      j_ = json::parse(text);
    } catch (const json::exception& e) {
      FEWSTEP_CHECK_VALUE(false, who_, ": options are not valid JSON: ", e.what());
    }
    FEWSTEP_CHECK_VALUE(j_.is_object(), who_, ": options must be a JSON object, got ", text);
  }

  template <class T>
  void operator()(const char* key, T& field) {
    known_.insert(key);
    if (!j_.contains(key)) return;
    const json& v = j_.at(key);
    if constexpr (std::is_enum_v<T>) {
      FEWSTEP_CHECK_TYPE(v.is_string(), key, " should be a str, got ", v.dump());
      parse_enum(v.get<std::string>(), field);
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      FEWSTEP_CHECK_TYPE(v.is_null() || v.is_number(), key, " should be a number or None, got ", v.dump());
      field = v.is_null() ? std::optional<double>() : std::optional<double>(v.get<double>());
    } else if constexpr (std::is_same_v<T, std::optional<std::pair<double, double>>>) {
      FEWSTEP_CHECK_TYPE(v.is_null() || (v.is_array() && v.size() == 2 && v[0].is_number() && v[1].is_number()), key,
                         " should be a pair of numbers [lo, hi] or None, got ", v.dump());
      field = v.is_null() ? std::optional<std::pair<double, double>>()
                          : std::make_pair(v[0].get<double>(), v[1].get<double>());
    } else {
      if constexpr (std::is_same_v<T, bool>) {
        FEWSTEP_CHECK_TYPE(v.is_boolean(), key, " should be a bool, got ", v.dump());
      } else if constexpr (std::is_integral_v<T>) {
        FEWSTEP_CHECK_TYPE(v.is_number_integer(), key, " should be an int, got ", v.dump());
        FEWSTEP_CHECK_VALUE(!std::is_unsigned_v<T> || v.is_number_unsigned(), key, " should be >= 0, got ", v.dump());
      } else if constexpr (std::is_floating_point_v<T>) {
        FEWSTEP_CHECK_TYPE(v.is_number(), key, " should be a number, got ", v.dump());
      } else if constexpr (std::is_same_v<T, std::string>) {
        FEWSTEP_CHECK_TYPE(v.is_string(), key, " should be a str, got ", v.dump());
      }
      try {
        field = v.get<T>();
      } catch (const json::exception& e) {
        FEWSTEP_CHECK_TYPE(false, key, " has the wrong type (", v.dump(), "): ", e.what());
      }
    }
  }

  /// ValueError naming the first key no field asked for.
  void finish() const {
    for (const auto& [key, value] : j_.items()) {
      if (known_.count(key) > 0) continue;
      std::string known;
      for (const std::string& k : known_) known += (known.empty() ? "" : ", ") + k;
      FEWSTEP_CHECK_VALUE(false, who_, ": unknown option '", key, "' (the options are ", known, ")");
    }
  }

 private:
  json j_;
  std::string who_;
  std::set<std::string> known_;
};

/// options_to_json / options_from_json of an options struct from its fields(v, options) function.
template <class O, class Fields>
std::string write(const O& options, Fields fields) {
  Writer w;
  fields(w, options);
  return w.dump();
}
template <class O, class Fields>
void read(const std::string& text, O& options, const char* who, Fields fields) {
  Reader r(text, who);
  fields(r, options);
  r.finish();
}

}  // namespace fewstep::json_options

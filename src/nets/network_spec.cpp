#include "fewstep/nets/network_spec.h"

#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

using json = nlohmann::json;

json parse(const std::string& text, const std::string& source) {
  try {
    json j = json::parse(text);
    FEWSTEP_CHECK_VALUE(j.is_object() && j.contains("kind") && j["kind"].is_string(), "network spec from ", source,
                        ": expected an object with a string 'kind' (\"UNet\" or \"MLP\"), got ", text);
    return j;
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, "network spec from ", source, " is not valid JSON: ", e.what());
  }
  return {};
}

template <class T>
void read(const json& config, const char* key, T& field, const std::string& source) {
  if (!config.contains(key)) return;
  try {
    field = config.at(key).get<T>();
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, "network spec from ", source, ": config.", key, " = ", config.at(key).dump(),
                        " has the wrong type (", e.what(), ")");
  }
}

const json& config_of(const json& j) {
  static const json empty = json::object();
  return j.contains("config") ? j.at("config") : empty;
}

}  // namespace

std::string network_spec(const UNetConfig& c) {
  const json cfg = {{"in_channels", c.in_channels},   {"image_size", c.image_size},
                    {"base_channels", c.base_channels}, {"channel_mult", c.channel_mult},
                    {"res_blocks", c.res_blocks},     {"attention", c.attention},
                    {"groups", c.groups},             {"time_frequencies", c.time_frequencies},
                    {"time_multiplier", c.time_multiplier}, {"num_classes", c.num_classes},
                    {"guidance_input", c.guidance_input}};
  return json{{"kind", "UNet"}, {"config", cfg}}.dump();
}

std::string network_spec(const MlpConfig& c) {
  const json cfg = {{"dim", c.dim},
                    {"hidden", c.hidden},
                    {"blocks", c.blocks},
                    {"time_frequencies", c.time_frequencies},
                    {"time_embed_dim", c.time_embed_dim},
                    {"time_multiplier", c.time_multiplier},
                    {"num_classes", c.num_classes},
                    {"guidance_input", c.guidance_input}};
  return json{{"kind", "MLP"}, {"config", cfg}}.dump();
}

ScriptNet network_from_spec(const std::string& text, uint64_t seed, const std::string& source, int guidance_input) {
  const json j = parse(text, source);
  const json& cfg = config_of(j);
  const std::string kind = j["kind"].get<std::string>();
  if (kind == "UNet") {
    UNetConfig c;
    read(cfg, "in_channels", c.in_channels, source);
    read(cfg, "image_size", c.image_size, source);
    read(cfg, "base_channels", c.base_channels, source);
    read(cfg, "channel_mult", c.channel_mult, source);
    read(cfg, "res_blocks", c.res_blocks, source);
    read(cfg, "attention", c.attention, source);
    read(cfg, "groups", c.groups, source);
    read(cfg, "time_frequencies", c.time_frequencies, source);
    read(cfg, "time_multiplier", c.time_multiplier, source);
    read(cfg, "num_classes", c.num_classes, source);
    read(cfg, "guidance_input", c.guidance_input, source);
    if (guidance_input >= 0) c.guidance_input = guidance_input != 0;
    return make_unet(c, seed);
  }
  FEWSTEP_CHECK_VALUE(kind == "MLP", "network spec from ", source, ": unknown kind '", kind,
                      "'; expected \"UNet\" or \"MLP\"");
  MlpConfig c;
  read(cfg, "dim", c.dim, source);
  read(cfg, "hidden", c.hidden, source);
  read(cfg, "blocks", c.blocks, source);
  read(cfg, "time_frequencies", c.time_frequencies, source);
  read(cfg, "time_embed_dim", c.time_embed_dim, source);
  read(cfg, "time_multiplier", c.time_multiplier, source);
  read(cfg, "num_classes", c.num_classes, source);
  read(cfg, "guidance_input", c.guidance_input, source);
  if (guidance_input >= 0) c.guidance_input = guidance_input != 0;
  return make_mlp(c, seed);
}

int64_t network_spec_num_classes(const std::string& text, const std::string& source) {
  int64_t n = 0;
  read(config_of(parse(text, source)), "num_classes", n, source);
  return n;
}

bool network_spec_guidance_input(const std::string& text, const std::string& source) {
  bool g = false;
  read(config_of(parse(text, source)), "guidance_input", g, source);
  return g;
}

}  // namespace fewstep

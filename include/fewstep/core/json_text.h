/// @file core/json_text.h
/// @brief Guards for JSON text read from files (model sidecars, sampler records, run records).
///
/// JSON parsers and serialisers that recurse (nlohmann::json's dump and comparisons do) overflow
/// the stack on deeply nested input: a sidecar of 100 000 nested arrays would kill the process.
/// Every JSON document fewstep reads from a file passes `check_json_depth` first, a
/// non-recursive scan that refuses nesting deeper than `kMaxJsonDepth` with an error naming the
/// file; fewstep's own documents nest at most five levels.
#pragma once

#include <string>

namespace fewstep {

/// The deepest nesting of arrays and objects accepted in a JSON document read from a file.
inline constexpr int kMaxJsonDepth = 64;

/// ValueError naming `what` (e.g. "sidecar 'models/x.json'") when `text` nests arrays and
/// objects deeper than `max_depth`. Brackets inside strings do not count. Does not otherwise
/// validate the text (the parser does).
void check_json_depth(const std::string& text, const std::string& what, int max_depth = kMaxJsonDepth);

}  // namespace fewstep

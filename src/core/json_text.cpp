#include "fewstep/core/json_text.h"

#include "fewstep/core/check.h"

namespace fewstep {

void check_json_depth(const std::string& text, const std::string& what, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      FEWSTEP_CHECK_VALUE(++depth <= max_depth, what, " nests JSON arrays/objects deeper than ", max_depth,
                          " levels (at byte ", i, "); it is not a fewstep document");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

}  // namespace fewstep

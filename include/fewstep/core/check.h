/// @file core/check.h
/// @brief Argument checks that name the argument, the bad value and what was expected.
///
/// They throw c10::ValueError / c10::TypeError (Python: ValueError / TypeError)
/// through the TORCH_CHECK_* machinery, so C++ callers catch one exception family
/// and the bindings map it to the right Python type.
#pragma once

#include <c10/util/Exception.h>

/// Invalid value of an argument: FEWSTEP_CHECK_VALUE(steps > 0, "steps must be positive, got ", steps).
#define FEWSTEP_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, __VA_ARGS__)
/// Wrong type/kind of argument (dtype, layout, unsupported category).
#define FEWSTEP_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, __VA_ARGS__)
/// Anything else that went wrong at run time (NaN found, file unreadable, ...).
#define FEWSTEP_CHECK(cond, ...) TORCH_CHECK(cond, __VA_ARGS__)

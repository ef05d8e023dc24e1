/// @file fewstep.h
/// @brief Umbrella header: schedules, grids, denoisers, steppers, the sampling driver.
#pragma once

#include "fewstep/core/check.h"
#include "fewstep/core/options.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/guidance.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/ddim.h"
#include "fewstep/solvers/dpmpp_2m.h"
#include "fewstep/solvers/euler.h"
#include "fewstep/solvers/heun.h"
#include "fewstep/solvers/registry.h"
#include "fewstep/solvers/stepper.h"
#include "fewstep/version.h"

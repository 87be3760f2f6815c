#include "state/user_state.h"

namespace clv::state {

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kPotential: return "potential";
    case Stage::kNew: return "new";
    case Stage::kActive: return "active";
    case Stage::kAtRisk: return "at_risk";
    case Stage::kDormant: return "dormant";
    case Stage::kReturning: return "returning";
  }
  return "unknown";
}

}  // namespace clv::state

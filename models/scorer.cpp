#include "models/scorer.h"

namespace clv::models {

void Scorer::InitState(float* state) const {
  for (int i = 0; i < state_size(); ++i) state[i] = 0.0f;
}

}  // namespace clv::models

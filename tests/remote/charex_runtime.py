"""An MLServer custom runtime serving a charex model file (used by the remote-verification tests)."""

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class CharexRuntime(MLModel):
    async def load(self) -> bool:
        from charex import load_model

        self.model = load_model(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x).float()).numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("logits", logits)])

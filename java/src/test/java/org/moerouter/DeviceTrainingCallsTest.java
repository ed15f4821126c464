// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.function.Executable;

/**
 * The device-pointer overloads of spec section 6 on routers without device memory: JAVA and CPU routers
 * reject every one with {@link Status#UNSUPPORTED} naming the backend, as routeDevice does, before any
 * address is read (the addresses below are bogus). CUDA results are checked in CudaRouterTest and, without a
 * GPU, by moe_check's training section in the SIMT harness (SimtHarnessTest).
 */
class DeviceTrainingCallsTest {
  @ParameterizedTest
  @EnumSource(value = Backend.class, names = {"JAVA", "CPU"})
  void hostRoutersRejectDevicePointers(Backend backend) {
    Assumptions.assumeTrue(MoeRouter.unavailableReason(backend) == null, () -> MoeRouter.unavailableReason(backend));
    RouterConfig config = RouterConfig.builder(16, 2).build();
    LossConfig losses = LossConfig.builder().auxLoss(1e-2f).zLoss(1e-3f).build();
    TokenDropping drop = TokenDropping.of(1.0, DropPolicy.PROBS, false);
    long bogus = 0x1000;
    try (MoeRouter r = MoeRouter.create(config, backend)) {
      List<Map.Entry<String, Executable>> calls = new ArrayList<>();
      calls.add(Map.entry("validTokensDevice", () -> r.validTokensDevice(bogus, LogitsType.FP32, 4, bogus, bogus, bogus, 0)));
      calls.add(Map.entry("tokensPerExpertDevice", () -> r.tokensPerExpertDevice(bogus, bogus, 4, bogus, 0)));
      calls.add(Map.entry("tokensPerExpertMapDevice", () -> r.tokensPerExpertMapDevice(bogus, bogus, 4, bogus, 0)));
      calls.add(Map.entry("lossesWorkspaceBytes", () -> r.lossesWorkspaceBytes(4, losses, true)));
      calls.add(Map.entry("lossesDevice", () -> r.lossesDevice(bogus, LogitsType.FP32, 4, bogus, losses, 0, 0.0, bogus,
          0, 0, 0, bogus, bogus, 1 << 20, 0)));
      calls.add(Map.entry("dropTokensWorkspaceBytes", () -> r.dropTokensWorkspaceBytes(4, DropPolicy.PROBS)));
      calls.add(Map.entry("dropTokensDevice", () -> r.dropTokensDevice(drop, bogus, bogus, 4, bogus, 0, 0, 0, 0, bogus,
          1 << 20, 0)));
      for (Map.Entry<String, Executable> c : calls) {
        MoeRouterException e = assertThrows(MoeRouterException.class, c.getValue(), backend + " " + c.getKey());
        assertEquals(Status.UNSUPPORTED, e.status(), c.getKey());
        assertTrue(e.getMessage().contains("device pointers need the CUDA backend (this router: " + backend + ")"),
            e.getMessage());
      }
    }
  }

  @ParameterizedTest
  @EnumSource(value = Backend.class, names = {"JAVA", "CPU"})
  void argumentsAreCheckedFirst(Backend backend) {
    Assumptions.assumeTrue(MoeRouter.unavailableReason(backend) == null, () -> MoeRouter.unavailableReason(backend));
    try (MoeRouter r = MoeRouter.create(RouterConfig.builder(16, 2).build(), backend)) {
      MoeRouterException e = assertThrows(MoeRouterException.class, () -> r.tokensPerExpertDevice(0, 0, -1, 0, 0));
      assertEquals(Status.INVALID_ARGUMENT, e.status());
      assertTrue(e.getMessage().contains("tokens must be >= 0, got -1"), e.getMessage());
      e = assertThrows(MoeRouterException.class, () -> r.lossesDevice(0, LogitsType.FP32, 4, 0,
          LossConfig.builder().globalAuxLoss(1f).build(), 0, 10.0, 0, 0, 0, 0, 0, 0, 0, 0));
      assertTrue(e.getMessage().contains("global aux loss needs the global tokens per expert"), e.getMessage());
    }
  }
}

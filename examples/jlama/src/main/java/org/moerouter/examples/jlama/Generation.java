// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.KvBufferCache;
import java.util.Arrays;
import java.util.Optional;

/**
 * The two passes of R3 over any jlama model, through jlama's public forward API: a rollout (greedy
 * generation, prompt then one forward per new token) and a teacher-forced pass over a whole sequence (what
 * a trainer computes log-probabilities on). Greedy, so that runs are comparable token for token.
 */
public final class Generation {
  /** jlama's batchForward cuts longer inputs into batches of this size and returns only the last one. */
  static final int JLAMA_MAX_BATCH = Integer.getInteger("jlama.max_batch_size", 256);

  private Generation() {}

  /** How the rollout feeds the prompt. */
  public enum Prefill {
    /** One batched forward over the prompt (jlama's {@code batchForward}, in batches of up to 256). */
    BATCHED,
    /** One forward per prompt token: the only path where jlama 0.8.4's own MoEBlock is right (it mixes rows of a batch). */
    STEPWISE
  }

  /**
   * Greedy generation of {@code newTokens} tokens after {@code prompt}; returns prompt followed by the
   * generated tokens. Stops early after {@code stopToken} when it is not -1.
   */
  public static int[] greedy(AbstractModel model, int[] prompt, int newTokens, Prefill prefill, int stopToken) {
    if (prompt.length == 0) throw new IllegalArgumentException("greedy generation needs a non-empty prompt");
    if (newTokens < 1) throw new IllegalArgumentException("newTokens must be >= 1, got " + newTokens);
    if (prompt.length + newTokens > model.getConfig().contextLength)
      throw new IllegalArgumentException("prompt (" + prompt.length + ") + new tokens (" + newTokens + ") exceed the context of "
          + model.getConfig().contextLength);
    int[] seq = Arrays.copyOf(prompt, prompt.length + newTokens);
    int n = prompt.length;
    KvBufferCache kv = new KvBufferCache(model);
    try (KvBufferCache.KvBuffer cache = kv.getEphemeralKvBuffer();
        AbstractTensor logits = model.makeDenseTensor(model.getConfig().vocabularySize)) {
      AbstractTensor last;
      if (prefill == Prefill.BATCHED) {
        last = model.batchForward(prompt, 0, cache);
      } else {
        last = null;
        for (int p = 0; p < prompt.length; p++) {
          if (last != null) last.close();
          last = model.forward(prompt[p], p, cache, Optional.empty());
        }
      }
      while (true) {
        int next = model.sample(last.slice(last.shape().first() - 1), 0f, 0f, logits);
        last.close();
        seq[n++] = next;
        if (n == seq.length || next == stopToken) break;
        last = model.forward(next, n - 1, cache, Optional.empty());
      }
    } finally {
      kv.close();
    }
    return Arrays.copyOf(seq, n);
  }

  /**
   * One forward over {@code tokens} from position 0 (teacher forcing), cut into forward calls of at most
   * {@code batch} tokens; returns the greedy prediction after each position ([tokens.length]).
   */
  public static int[] teacherForced(AbstractModel model, int[] tokens, int batch) {
    if (batch < 1 || batch > JLAMA_MAX_BATCH)
      throw new IllegalArgumentException("batch must be in [1, " + JLAMA_MAX_BATCH + "] (jlama.max_batch_size), got " + batch);
    int[] predicted = new int[tokens.length];
    KvBufferCache kv = new KvBufferCache(model);
    try (KvBufferCache.KvBuffer cache = kv.getEphemeralKvBuffer();
        AbstractTensor logits = model.makeDenseTensor(model.getConfig().vocabularySize)) {
      for (int from = 0; from < tokens.length; from += batch) {
        int to = Math.min(tokens.length, from + batch);
        try (AbstractTensor out = model.batchForward(Arrays.copyOfRange(tokens, from, to), from, cache)) {
          for (int i = 0; i < to - from; i++) predicted[from + i] = model.sample(out.slice(i), 0f, 0f, logits);
        }
      }
    } finally {
      kv.close();
    }
    return predicted;
  }
}

import { act, renderHook } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { useDebounced } from "./Search";

afterEach(() => vi.useRealTimers());

describe("useDebounced", () => {
  it("passes a value on only once typing pauses", () => {
    vi.useFakeTimers();
    const { result, rerender } = renderHook(({ v }) => useDebounced(v, 250), { initialProps: { v: "b" } });
    rerender({ v: "be" });
    act(() => vi.advanceTimersByTime(200));
    rerender({ v: "bea" });
    act(() => vi.advanceTimersByTime(200));
    expect(result.current).toBe("b");
    act(() => vi.advanceTimersByTime(60));
    expect(result.current).toBe("bea");
  });
});

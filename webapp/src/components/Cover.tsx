// Cover art: a signed URL from the API, shown at a fixed size.

import { useState } from "react";

/**
 * A cover picture, or a plain tile of the same size when there is none (or
 * it fails to load), so that rows and cards line up. Decorative: the title
 * next to it says what it is.
 */
export function Cover({ src, size, testId }: { src?: string | null; size: number; testId?: string }) {
  // The URL that failed to load, so that a new URL (a fresh signature, a
  // new cover) is tried again.
  const [failedSrc, setFailedSrc] = useState<string | null>(null);
  const style = { width: size, height: size };
  if (!src || failedSrc === src) return <span className="cover none" style={style} aria-hidden="true" />;
  return (
    <img
      className="cover"
      src={src}
      alt=""
      width={size}
      height={size}
      loading="lazy"
      decoding="async"
      data-testid={testId}
      onError={() => setFailedSrc(src)}
    />
  );
}

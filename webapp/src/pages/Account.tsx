// Register and log in.

import { useState } from "react";
import { Link, useNavigate } from "react-router";
import { useMutation } from "urql";
import { graphql } from "../gql";
import { useSession } from "../session";

const Register = graphql(`
  mutation Register($name: String!, $password: String!) {
    register(name: $name, password: $password) {
      token
      expiresAt
      user {
        id
        name
        role
      }
    }
  }
`);

const Login = graphql(`
  mutation Login($name: String!, $password: String!) {
    login(name: $name, password: $password) {
      token
      expiresAt
      user {
        id
        name
        role
      }
    }
  }
`);

export function AccountForm({ mode }: { mode: "login" | "register" }) {
  const { signIn } = useSession();
  const navigate = useNavigate();
  const [, register] = useMutation(Register);
  const [, login] = useMutation(Login);
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [problem, setProblem] = useState<string>();
  const [busy, setBusy] = useState(false);
  const title = mode === "login" ? "Log in" : "Create an account";
  return (
    <section className="narrow">
      <h1>{title}</h1>
      <form
        className="stack"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          const r = mode === "login" ? await login({ name, password }) : await register({ name, password });
          setBusy(false);
          const payload = r.data && ("login" in r.data ? r.data.login : "register" in r.data ? r.data.register : undefined);
          if (!payload) {
            setProblem(r.error?.graphQLErrors[0]?.message ?? r.error?.message ?? "Something went wrong");
            return;
          }
          signIn(payload);
          navigate("/");
        }}
      >
        <label htmlFor="name">Name</label>
        <input id="name" autoComplete="username" required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
        <label htmlFor="password">Password</label>
        <input
          id="password"
          type="password"
          autoComplete={mode === "login" ? "current-password" : "new-password"}
          required
          minLength={mode === "register" ? 8 : undefined}
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        {problem && (
          <p className="error" role="alert">
            {problem}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {title}
        </button>
      </form>
      <p className="sub">
        {mode === "login" ? (
          <>
            No account? <Link to="/register">Create one</Link>.
          </>
        ) : (
          <>
            Have an account? <Link to="/login">Log in</Link>.
          </>
        )}
      </p>
    </section>
  );
}
